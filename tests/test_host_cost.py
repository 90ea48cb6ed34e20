"""Host cost per stage: the CPU of each stage's worker threads, and the part inside model calls
(engine/cpu.py), as the runtime records it and the engine's snapshot reports it."""

from __future__ import annotations

import gc
import json
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import MEDIA, wait_for_batch

from voxdock.engine.batching import SharedBatcher
from voxdock.engine.cpu import HandlerCost, ModelTime, model_call, process_cpu_seconds, take_model_time
from voxdock.engine.engine import Engine
from voxdock.engine.oom import AdaptiveBatch
from voxdock.engine.runtime import Stage
from voxdock.engine.work import FileWork


def burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU time (at least)."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def test_model_calls_count_on_their_own_thread_and_nested_calls_apart() -> None:
    results: dict[int, tuple[HandlerCost, dict[str, ModelTime]]] = {}

    def worker(k: int) -> None:
        cost = HandlerCost()
        cost.start()
        burn(0.05)  # host work
        with model_call("outer"):
            burn(0.05)
            with model_call("inner"):
                burn(0.04 * k)
            time.sleep(0.05)  # waiting inside a model call: wall, not CPU
        cost.stop()
        results[k] = (cost, take_model_time())

    threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, (cost, left) in results.items():
        outer, inner = cost.models["outer"], cost.models["inner"]
        assert (outer.calls, inner.calls) == (1, 1)
        assert inner.cpu_s >= 0.04 * k  # this thread's own, whatever the other one burnt
        assert 0.05 <= outer.cpu_s < 0.05 + 0.04 * k / 2  # the nested call is not counted twice
        assert outer.wall_s >= 0.05  # the sleep is wall time of the outer call
        assert inner.wall_s >= inner.cpu_s
        model_cpu = outer.cpu_s + inner.cpu_s
        assert model_cpu <= cost.cpu_s
        assert cost.cpu_s - model_cpu >= 0.05  # the host work outside
        assert left == {}  # the handler's figures were taken: the thread starts afresh


def test_a_shared_batch_call_counts_on_the_thread_that_runs_it() -> None:
    """SharedBatcher: the first thread to find the model free runs the queued items of every thread;
    the call's CPU is that thread's (its stage's), and no call is counted twice or lost."""
    ran_on: list[int] = []

    def run(chunk: Sequence[int]) -> list[int]:
        with model_call("net"):
            ran_on.append(threading.get_ident())
            burn(0.01 * len(chunk))
            return [x * 2 for x in chunk]

    batcher: SharedBatcher[int, int] = SharedBatcher(run, AdaptiveBatch(4))
    tallies: dict[int, dict[str, ModelTime]] = {}
    costs: dict[int, HandlerCost] = {}
    start = threading.Barrier(4)

    def worker(k: int) -> None:
        cost = HandlerCost()
        start.wait()
        cost.start()
        assert batcher.map(list(range(k * 10, k * 10 + 6))) == [x * 2 for x in range(k * 10, k * 10 + 6)]
        cost.stop()
        costs[threading.get_ident()] = cost
        tallies[threading.get_ident()] = cost.models

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ran_on) == batcher.calls
    for ident, models in tallies.items():
        calls = models["net"].calls if "net" in models else 0
        assert calls == ran_on.count(ident)  # counted where it ran
        if calls:
            assert models["net"].cpu_s <= costs[ident].cpu_s
    assert sum(m["net"].calls for m in tallies.values() if "net" in m) == batcher.calls
    assert sum(m["net"].cpu_s for m in tallies.values() if "net" in m) >= 0.01 * 24


class _Context:
    def __init__(self) -> None:
        self.aborting = False
        self.shutting_down = False

    def files_in_flight(self) -> int:
        return 0

    def fail(self, work: FileWork, stage: str, reason: str) -> None:
        raise AssertionError(reason)

    def requeue(self, work: FileWork) -> None:
        raise AssertionError("requeued")


def test_a_stage_records_its_threads_cpu_and_the_part_in_model_calls() -> None:
    done: queue.Queue[FileWork] = queue.Queue()

    def handle(work: FileWork) -> None:
        burn(0.03)
        with model_call("net"):
            burn(0.03)

    inbox: queue.Queue[FileWork] = queue.Queue()
    ctx = _Context()
    stage = Stage("x", ctx, inbox, done, workers=2, handle=handle)  # finished files land in `done`
    stage.start()
    for _ in range(4):
        work = FileWork(job=None)  # type: ignore[arg-type]
        work.duration_s = 60.0
        inbox.put(work)
    for _ in range(4):
        done.get(timeout=60)
    snap = stage.snapshot()
    ctx.shutting_down = True
    stage.join(timeout=5)
    assert snap.items == 4
    assert snap.models["net"].calls == 4
    assert snap.model_cpu_s >= 4 * 0.03
    assert snap.cpu_s >= snap.model_cpu_s + 4 * 0.03
    assert snap.host_cpu_s == pytest.approx(snap.cpu_s - snap.model_cpu_s)
    assert snap.model_wall_s >= snap.model_cpu_s * 0.99  # one thread: CPU within wall time
    per_hour = snap.per_audio_hour(snap.cpu_s)
    assert per_hour is not None and per_hour == pytest.approx(snap.cpu_s / 240.0 * 3600.0)


@pytest.mark.models
@pytest.mark.slow
def test_a_real_run_fills_every_stages_cpu_figures(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    files = []
    for name in ("dialogue_2spk.wav", "real/jfk.wav"):  # one diarized, one on the fast path
        target = tmp_path / "media" / Path(name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MEDIA / name, target)
        files.append(target)
    engine = make_engine()
    submission = engine.submit(files)
    engine.start()
    progress = wait_for_batch(engine, submission.batch_id)
    assert (progress.done, progress.failed) == (2, 0)
    snap = engine.snapshot()
    stages = {s.name: s for s in snap.stages}
    for s in snap.stages:
        assert s.items > 0, s.name
        assert s.cpu_s > 0, s.name
        assert 0 <= s.model_cpu_s <= s.cpu_s + 1e-6, s.name
        assert s.model_wall_s >= 0
        # One worker thread cannot spend more CPU than the wall time it worked (handing files on adds
        # a little outside the busy time).
        assert s.cpu_s <= s.busy_s * 1.1 + 0.5, s.name
        assert abs(sum(m.cpu_s for m in s.models.values()) - s.model_cpu_s) < 1e-6, s.name
    asr = stages["asr"]
    # Silero runs once per file, in the VAD stage: Whisper's pipeline is handed its regions.
    assert set(asr.models) == {"faster-whisper", "ctranslate2"}, asr.models
    assert asr.model_cpu_s > 0
    assert set(stages["vad"].models) == {"silero-vad"}
    assert stages["vad"].models["silero-vad"].calls >= 2
    assert {"segmentation-3.0", "campplus"} <= set(stages["diarize"].models)
    assert set(stages["text"].models) == {"text-embedding"}
    assert stages["decode"].models == {} and stages["store"].models == {}
    assert stages["decode"].host_cpu_s == stages["decode"].cpu_s > 0
    assert snap.process_cpu_s >= sum(s.cpu_s for s in snap.stages)
    # the process's CPU includes its decoder children's, which the decode stage's figures hold
    assert snap.process_cpu_s <= process_cpu_seconds() + engine.decoders.cpu_s
    assert engine.decoders.cpu_s > 0
    # The heartbeat stores the snapshot as JSON: the new figures travel with it.
    stored = json.loads(json.dumps(snap.to_json()))
    asr_json = next(s for s in stored["stages"] if s["name"] == "asr")
    assert asr_json["models"]["ctranslate2"]["calls"] >= 1
    assert stored["process_cpu_s"] > 0
    # The models' objects are frozen out of the collector's full passes while the engine runs (each
    # walked half a million objects holding the interpreter lock), and given back when it stops.
    assert gc.get_freeze_count() > 100_000
    engine.stop()
    assert gc.get_freeze_count() == 0
