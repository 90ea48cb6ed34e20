"""Self-tuning decisions on made-up snapshots and a made-up clock: grow the saturated bottleneck
while the host has room, keep what helps, take back what does not, leave pinned knobs alone, and
grow nothing past the VRAM budget."""

from __future__ import annotations

from dataclasses import replace

from voxdock.engine.autotune import COOL_DOWN_S, IDLE_S, AutoTuner, Host
from voxdock.engine.metrics import EngineSnapshot, StageSnapshot, Totals
from voxdock.engine.vram import GIB, StageVram, VramSnapshot

NAMES = ("decode", "vad", "asr", "diarize", "voice", "text", "store")
ROOM = Host(cpu_busy=0.30, gpu_busy=None, cores=16)


class Pipeline:
    """Stage workers and busy time as a run would report them: `rtf` per stage, all workers of a
    saturated stage busy through each period."""

    def __init__(self, rtf: dict[str, float], workers: dict[str, int] | None = None) -> None:
        self.rtf = rtf
        self.workers = {name: 1 for name in NAMES} | (workers or {})
        self.busy = dict.fromkeys(NAMES, 0.0)
        self.applied: list[tuple[str, int]] = []
        self.vram: VramSnapshot | None = None  # what the engine would measure on a GPU
        self.batch = {"asr": 8, "diarize": 64}

    def apply(self, stage: str, workers: int) -> None:
        self.applied.append((stage, workers))
        self.workers[stage] = workers

    def snapshot(
        self, pace: float, period: float, *, saturated: tuple[str, ...], queued: int = 3
    ) -> EngineSnapshot:
        stages = []
        for name in NAMES:
            busy_workers = self.workers[name] if name in saturated else 0
            self.busy[name] += busy_workers * period
            stages.append(
                StageSnapshot(
                    name=name,
                    rtf_now=self.rtf.get(name),
                    rtf_run=self.rtf.get(name),
                    audio_s=0.0,
                    busy_s=self.busy[name],
                    items=0,
                    errors=0,
                    queue_depth=queued if name in saturated else 0,
                    workers=self.workers[name],
                    workers_busy=busy_workers,
                    batch_size=self.batch.get(name),
                    batch_size_now=self.batch.get(name),
                    oom_backoffs=0,
                )
            )
        totals = Totals(0, 0, 0, 4, 0, 0, 0.0, 0.0, pace, pace)
        return EngineSnapshot(
            taken_at=0.0, node_id="n", state="running", stages=stages, totals=totals, vram=self.vram
        )


def tuner_for(pipeline: Pipeline, **kwargs: object) -> AutoTuner:
    tuner = AutoTuner(apply=pipeline.apply, max_workers=lambda _stage: 16, **kwargs)  # type: ignore[arg-type]
    tuner.start(pipeline.snapshot(1.0, 1.0, saturated=()).stages)
    return tuner


def run(
    tuner: AutoTuner, pipeline: Pipeline, pace: float, seconds: float, start: float, host: Host = ROOM
) -> float:
    now = start
    while now < start + seconds:
        now += tuner.period_s
        tuner.look(pipeline.snapshot(pace, tuner.period_s, saturated=("diarize",)), host, now)
    return now


def test_grows_the_saturated_bottleneck_and_keeps_what_helps() -> None:
    pipeline = Pipeline({"asr": 0.02, "diarize": 0.12})
    tuner = tuner_for(pipeline)
    now = run(tuner, pipeline, pace=20.0, seconds=5.0, start=0.0)
    assert pipeline.applied == [("diarize", 2)]
    assert tuner.trial is not None
    now = run(tuner, pipeline, pace=36.0, seconds=tuner.settle_s, start=now)  # the pace followed
    assert tuner.trial is None or tuner.trial.change.workers_from == 2
    assert pipeline.workers["diarize"] >= 2
    run(tuner, pipeline, pace=36.0, seconds=60.0, start=now)  # the next step brings nothing
    assert pipeline.applied == [("diarize", 2), ("diarize", 3), ("diarize", 2)]


def test_takes_back_a_change_that_brought_nothing_and_cools_down() -> None:
    pipeline = Pipeline({"asr": 0.02, "diarize": 0.12})
    tuner = tuner_for(pipeline)
    now = run(tuner, pipeline, pace=20.0, seconds=5.0, start=0.0)
    now = run(tuner, pipeline, pace=20.2, seconds=tuner.settle_s + 5.0, start=now)
    assert pipeline.applied == [("diarize", 2), ("diarize", 1)]
    now = run(tuner, pipeline, pace=20.0, seconds=COOL_DOWN_S - 60.0, start=now)
    assert pipeline.applied == [("diarize", 2), ("diarize", 1)], "tried again during the cool-down"
    run(tuner, pipeline, pace=20.0, seconds=120.0, start=now)
    assert pipeline.applied[2] == ("diarize", 2)


def test_pinned_knobs_and_a_busy_host_are_left_alone() -> None:
    pipeline = Pipeline({"asr": 0.02, "diarize": 0.12})
    run(tuner_for(pipeline, pinned={"diarize.workers"}), pipeline, pace=20.0, seconds=60.0, start=0.0)
    busy_cpu = Host(cpu_busy=0.90, gpu_busy=None, cores=16)
    run(tuner_for(pipeline), pipeline, pace=20.0, seconds=60.0, start=0.0, host=busy_cpu)
    busy_gpu = Host(cpu_busy=0.20, gpu_busy=0.95, cores=16)
    run(tuner_for(pipeline, on_gpu=True), pipeline, pace=20.0, seconds=60.0, start=0.0, host=busy_gpu)
    assert pipeline.applied == []


def test_pinning_during_a_trial_ends_it_without_taking_anything_back() -> None:
    pipeline = Pipeline({"asr": 0.02, "diarize": 0.12})
    tuner = tuner_for(pipeline)
    now = run(tuner, pipeline, pace=20.0, seconds=5.0, start=0.0)
    tuner.pin("diarize.workers")
    pipeline.apply("diarize", 6)  # what the operator chose
    run(tuner, pipeline, pace=20.0, seconds=120.0, start=now)
    assert pipeline.workers["diarize"] == 6


def test_no_backlog_no_change_and_idle_workers_are_given_back() -> None:
    pipeline = Pipeline({"asr": 0.02, "diarize": 0.12}, workers={"text": 4})
    tuner = tuner_for(pipeline)
    tuner._stages["text"] = replace(tuner._stages["text"], floor=1)
    now = 0.0
    for _ in range(int(IDLE_S / tuner.period_s) + 2):  # a backlog elsewhere, text idle
        now += tuner.period_s
        tuner.look(pipeline.snapshot(20.0, tuner.period_s, saturated=("asr",)), Host(0.95, None, 16), now)
    assert ("text", 3) in pipeline.applied
    quiet = Pipeline({"asr": 0.02})
    tuner = tuner_for(quiet)
    for i in range(100):
        tuner.look(
            quiet.snapshot(0.0, tuner.period_s, saturated=(), queued=0), ROOM, (i + 1) * tuner.period_s
        )
    assert quiet.applied == []


def test_a_small_host_with_room_still_tries() -> None:
    """Two cores 60% busy: a worker more is tried (and taken back if the pace does not follow)."""
    pipeline = Pipeline({"asr": 0.02, "diarize": 0.12})
    run(tuner_for(pipeline), pipeline, pace=9.4, seconds=5.0, start=0.0, host=Host(0.60, None, 2))
    assert pipeline.applied == [("diarize", 2)]


def vram(used_gib: float, diarize_mib_per_item: float, budget_gib: float = 14.0) -> VramSnapshot:
    """A 14 GiB budget (the seed's operators' figure) with diarize's calls measured per item."""
    per_item = diarize_mib_per_item * 2**20
    return VramSnapshot(
        "GPU_MEMORY_BUDGET=14 GiB",
        int(budget_gib * GIB),
        int(used_gib * GIB),
        80 * GIB,
        "process",
        {"diarize": StageVram(50, int(64 * per_item), per_item)},
        0,
    )


def tune_on_gpu(pipeline: Pipeline, seconds: float) -> list[str]:
    tuner = tuner_for(pipeline, on_gpu=True)
    said: list[str] = []
    now = 0.0
    while now < seconds:
        now += tuner.period_s
        snap = pipeline.snapshot(20.0, tuner.period_s, saturated=("diarize",))
        said += [c.reason for c in tuner.look(snap, Host(0.30, 0.40, 16), now)]
    return said


def test_no_worker_more_when_its_predicted_vram_passes_the_budget() -> None:
    """12 GiB in use; a diarize call of 64 items measured at 40 MiB each: one more worker would take
    2.5 GiB more, to 14.5 GiB of a 14 GiB budget. The tuner holds, and says why once."""
    pipeline = Pipeline({"asr": 0.02, "diarize": 0.12})
    pipeline.vram = vram(12.0, 40.0)
    said = tune_on_gpu(pipeline, 60.0)
    assert pipeline.applied == []
    assert len(said) == 1, said
    assert said[0].startswith("held at 1 worker: 1 more worker would take VRAM to 14.5 GiB")
    assert "over the 14.0 GiB budget" in said[0]


def test_a_worker_more_when_it_fits_and_none_when_use_is_already_over() -> None:
    fits = Pipeline({"asr": 0.02, "diarize": 0.12})
    fits.vram = vram(10.0, 40.0)  # 12.5 GiB after one more worker: within 14
    tune_on_gpu(fits, 5.0)
    assert fits.applied == [("diarize", 2)]
    over = Pipeline({"asr": 0.02, "diarize": 0.12})
    over.vram = vram(14.2, 0.0)  # over already (another tenant, a runtime's cache): nothing grows
    said = tune_on_gpu(over, 30.0)
    assert over.applied == [] and "already over the 14.0 GiB budget" in said[0]


def test_a_hold_is_said_again_once_the_budget_let_the_stage_grow() -> None:
    pipeline = Pipeline({"asr": 0.02, "diarize": 0.12})
    pipeline.vram = vram(12.0, 40.0)
    tuner = tuner_for(pipeline, on_gpu=True)
    host = Host(0.30, 0.40, 16)

    def look(now: float) -> list[str]:
        snap = pipeline.snapshot(20.0, tuner.period_s, saturated=("diarize",))
        return [c.reason for c in tuner.look(snap, host, now)]

    assert look(5.0)[0].startswith("held")
    assert look(10.0) == []  # said once
    pipeline.vram = vram(8.0, 40.0)  # memory freed: it grows, and the trial runs
    assert look(15.0)[0].startswith("bottleneck") and pipeline.applied == [("diarize", 2)]
