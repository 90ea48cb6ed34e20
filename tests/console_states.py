"""Fixed console states for snapshot tests: real data classes, fixed values, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from voxdock.engine.engine import Submission
from voxdock.engine.events import EngineEvent
from voxdock.engine.metrics import EngineSnapshot, GpuSnapshot, StageSnapshot, Totals
from voxdock.engine.vram import GIB, StageVram, VramSnapshot
from voxdock.storage.jobs import BatchProgress, JobRow
from voxdock.storage.nodes import NodeRow
from voxdock.tui.backend import ConsoleData

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def stages(*, oom: bool = False) -> list[StageSnapshot]:
    rows = [
        ("decode", 0.004, 1, 1, None, None),
        ("vad", 0.006, 0, 1, None, None),
        ("asr", 0.091, 3, 2, 8, 8),
        ("diarize", 0.043, 1, 1, 64, 64),
        ("voice", 0.011, 0, 1, 32, 16 if oom else 32),
        ("text", 0.008, 0, 1, 64, 64),
        ("store", 0.001, 0, 1, None, None),
    ]
    return [
        StageSnapshot(
            name=name,
            rtf_now=rtf,
            rtf_run=rtf * 1.1,
            audio_s=5400.0,
            busy_s=5400.0 * rtf,
            items=120,
            errors=1 if name == "decode" else 0,
            queue_depth=queue,
            workers=workers,
            workers_busy=min(workers, queue),
            batch_size=batch,
            batch_size_now=now,
            oom_backoffs=2 if oom and name == "voice" else 0,
            bottleneck=(name == "asr"),
        )
        for name, rtf, queue, workers, batch, now in rows
    ]


def snapshot(*, gpus: list[GpuSnapshot] | None = None, oom: bool = False) -> EngineSnapshot:
    return EngineSnapshot(
        taken_at=0.0,
        node_id="gpu-a-1f2e3d",
        state="running",
        stages=stages(oom=oom),
        totals=Totals(
            files_done=118,
            files_failed=1,
            files_skipped=12,
            files_in_flight=3,
            segments_written=4213,
            fast_path_skips=41,
            audio_s_done=5400.0,
            active_wall_s=480.0,
            hours_per_hour=11.3,
            hours_per_hour_now=12.1,
        ),
        gpus=gpus or [],
        gpu_available=bool(gpus),
        models={"asr": "tiny.en"},
        fast_path_threshold=0.6,
    )


def batches(*, paused: bool = False, failed: bool = False) -> list[BatchProgress]:
    return [
        BatchProgress(
            id=3,
            name="archive-2019",
            state="paused" if paused else "running",
            created_at=T0,
            total=250,
            queued=120,
            claimed=3,
            done=120 - (1 if failed else 0),
            failed=1 if failed else 0,
            skipped=6,
            audio_seconds_done=5200.0,
            audio_seconds_total=None,
        ),
        BatchProgress(
            id=2,
            name="interviews",
            state="running",
            created_at=T0,
            total=12,
            queued=0,
            claimed=0,
            done=6,
            failed=0,
            skipped=6,
            audio_seconds_done=200.0,
            audio_seconds_total=200.0,
            options={"num_speakers": 2},
        ),
    ]


def files(*, failed: bool = False) -> list[JobRow]:
    rows = [
        JobRow(
            job_id=11,
            source_id=11,
            path="/archive/2019/tape-0012.wav",
            state="claimed",
            attempts=1,
            last_error=None,
            claimed_by="gpu-a-1f2e3d",
            duration_s=None,
            segment_count=0,
        ),
        JobRow(
            job_id=10,
            source_id=10,
            path="/archive/2019/tape-0011.mp4",
            state="done",
            attempts=1,
            last_error=None,
            claimed_by="gpu-a-1f2e3d",
            duration_s=1834.0,
            segment_count=412,
            speaker_count=3,
            speaker_names=("Alice Moreau", "Ben Okafor"),
        ),
        JobRow(
            job_id=12,
            source_id=12,
            path="/archive/2019/tape-0013.flac",
            state="queued",
            attempts=0,
            last_error=None,
            claimed_by=None,
            duration_s=None,
            segment_count=0,
        ),
    ]
    if failed:
        rows.insert(
            0,
            JobRow(
                job_id=9,
                source_id=9,
                path="/archive/2019/tape-0010.wav",
                state="failed",
                attempts=1,
                last_error="decode: truncated WAV: the header declares 96,000,000 bytes of audio but "
                "only 31,457,280 are present",
                claimed_by="gpu-a-1f2e3d",
                duration_s=None,
                segment_count=0,
            ),
        )
    return rows


def nodes() -> list[NodeRow]:
    return [
        NodeRow(
            id="gpu-a-1f2e3d",
            hostname="gpu-a",
            pid=4242,
            version="0.1.0",
            state="running",
            started_at=T0,
            heartbeat_at=T0,
            seconds_since_heartbeat=2.0,
            metrics={
                "totals": {"hours_per_hour": 11.3, "files_done": 118, "files_failed": 1, "files_in_flight": 3}
            },
        )
    ]


def gpu_history() -> dict[int, list[GpuSnapshot]]:
    samples = [
        GpuSnapshot(0, "NVIDIA H100", u, 30000.0 + 200 * i, 81559.0)
        for i, u in enumerate([35, 60, 88, 92, 95, 90, 97, 99, 94, 91, 96, 98])
    ]
    return {0: samples}


def vram() -> VramSnapshot:
    """The engine's use of the H100 in `gpu_history` against the default budget (90% of the card)."""
    total = 81559 * 2**20
    return VramSnapshot(
        "default: 10% of the card left free",
        budget_bytes=int(0.9 * total),
        used_bytes=int(31.4 * GIB),
        total_bytes=total,
        used_by="process",
        stages={"asr": StageVram(40, 2 * GIB, 256 * 2**20), "diarize": StageVram(300, GIB, 16 * 2**20)},
        device=0,
    )


def state(name: str) -> ConsoleData:
    base = ConsoleData(
        snapshot=snapshot(),
        batches=batches(),
        files=files(),
        selected_batch=3,
        nodes=nodes(),
        in_flight=[("/archive/2019/tape-0012.wav", "asr")],
    )
    if name == "running-no-gpu":
        return base
    if name == "paused":
        return replace(base, batches=batches(paused=True))
    if name == "failed-file":
        return replace(base, batches=batches(failed=True), files=files(failed=True))
    if name == "store-down":  # the engine waits for the database; the gather's own read failed too
        down = replace(
            base.snapshot,
            store_problem="database unavailable since 12:00:01, retrying, attempt 4: connection refused",
        )
        return replace(base, snapshot=down, error="PoolTimeout: couldn't get a connection after 5.00 sec")
    if name == "gpu":
        history = gpu_history()
        on_gpu = replace(snapshot(gpus=[history[0][-1]], oom=True), vram=vram())
        return replace(base, snapshot=on_gpu, gpu_history=history)
    raise KeyError(name)


@dataclass
class FrozenBackend:
    """A fixed picture for rendering tests; controls are recorded, not performed."""

    data: ConsoleData
    events: list[EngineEvent] = field(default_factory=list)
    calls: list[tuple[object, ...]] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return self.data.snapshot.node_id

    def gather(self, selected_batch: int | None) -> ConsoleData:
        return self.data

    def drain_events(self) -> list[EngineEvent]:
        events, self.events = self.events, []
        return events

    def files_in_flight(self) -> int:
        return self.data.snapshot.totals.files_in_flight

    def pause(self, batch_id: int) -> None:
        self.calls.append(("pause", batch_id))

    def resume(self, batch_id: int) -> None:
        self.calls.append(("resume", batch_id))

    def cancel(self, batch_id: int) -> None:
        self.calls.append(("cancel", batch_id))

    def retry(self, batch_id: int) -> None:
        self.calls.append(("retry", batch_id))

    def release(self, stage: str) -> None:
        self.calls.append(("release", stage))

    def set_workers(self, stage: str, workers: int) -> None:
        self.calls.append(("workers", (stage, workers)))

    def set_batch_size(self, stage: str, size: int) -> None:
        self.calls.append(("batch", (stage, size)))

    def set_fast_path_threshold(self, value: float) -> None:
        self.calls.append(("threshold", value))

    def submit(self, paths, batch_name=None, options=None) -> Submission:  # type: ignore[no-untyped-def]
        self.calls.append(("submit", [str(Path(p)) for p in paths], options or {}))
        return Submission(batch_id=4, name=batch_name or "new", queued=1, skipped=0, ignored=0)

    def stop(self, mode: str) -> bool:
        self.calls.append(("stop", mode))
        return True
