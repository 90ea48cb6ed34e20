"""Per-stage and engine-wide metrics, recorded from worker threads, read as cheap snapshots.

RTF (real-time factor) = processing seconds / audio seconds: busy worker-seconds over the audio they
handled, so 0.05 means a stage needs 3 s of one worker for a minute of audio. "Now" is over the last
WINDOW_S seconds, "run" since the engine started. Snapshots are plain dataclasses (JSON-able), taken
under short locks, cheap enough for every second.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

WINDOW_S = 30.0


@dataclass(frozen=True)
class StageSnapshot:
    name: str
    rtf_now: float | None
    rtf_run: float | None
    audio_s: float
    busy_s: float
    items: int
    errors: int
    queue_depth: int
    workers: int
    workers_busy: int
    batch_size: int | None  # configured; None for stages that do not batch
    batch_size_now: int | None  # after out-of-memory backoff
    oom_backoffs: int
    bottleneck: bool = False


@dataclass(frozen=True)
class Totals:
    files_done: int
    files_failed: int
    files_skipped: int
    files_in_flight: int
    segments_written: int
    fast_path_skips: int
    audio_s_done: float
    active_wall_s: float
    hours_per_hour: float | None  # audio hours done per hour of wall time while working
    hours_per_hour_now: float | None  # the same over the last WINDOW_S


@dataclass(frozen=True)
class GpuSnapshot:
    index: int
    name: str
    utilization_pct: float
    memory_used_mb: float
    memory_total_mb: float


@dataclass(frozen=True)
class EngineSnapshot:
    taken_at: float
    node_id: str
    state: str
    stages: list[StageSnapshot]
    totals: Totals
    gpus: list[GpuSnapshot] = field(default_factory=list)
    gpu_available: bool = False
    models: dict[str, str] = field(default_factory=dict)
    fast_path_threshold: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def stage(self, name: str) -> StageSnapshot:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


class StageMetrics:
    """Counters of one stage. `record` is called by workers; `snapshot` by anyone."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._audio_s = 0.0
        self._busy_s = 0.0
        self._items = 0
        self._errors = 0
        self._oom_backoffs = 0
        self._busy_workers = 0
        self._recent: deque[tuple[float, float, float]] = deque()  # (when, audio_s, busy_s)

    def started(self) -> None:
        with self._lock:
            self._busy_workers += 1

    def finished(self) -> None:
        with self._lock:
            self._busy_workers -= 1

    def record(self, *, audio_s: float, busy_s: float, items: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            self._audio_s += audio_s
            self._busy_s += busy_s
            self._items += items
            self._recent.append((now, audio_s, busy_s))
            self._trim(now)

    def error(self) -> None:
        with self._lock:
            self._errors += 1

    def oom_backoff(self) -> None:
        with self._lock:
            self._oom_backoffs += 1

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > WINDOW_S:
            self._recent.popleft()

    def snapshot(
        self, *, queue_depth: int, workers: int, batch_size: int | None, batch_size_now: int | None
    ) -> StageSnapshot:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            audio_now = sum(a for _, a, _ in self._recent)
            busy_now = sum(b for _, _, b in self._recent)
            return StageSnapshot(
                name=self.name,
                rtf_now=busy_now / audio_now if audio_now > 0 else None,
                rtf_run=self._busy_s / self._audio_s if self._audio_s > 0 else None,
                audio_s=self._audio_s,
                busy_s=self._busy_s,
                items=self._items,
                errors=self._errors,
                queue_depth=queue_depth,
                workers=workers,
                workers_busy=self._busy_workers,
                batch_size=batch_size,
                batch_size_now=batch_size_now,
                oom_backoffs=self._oom_backoffs,
            )


class EngineCounters:
    """Totals across the run; the active wall clock only runs while some file is in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.files_done = 0
        self.files_failed = 0
        self.files_skipped = 0
        self.segments_written = 0
        self.fast_path_skips = 0
        self.audio_s_done = 0.0
        self._active_since: float | None = None
        self._active_total = 0.0
        self._in_flight = 0
        self._recent_audio: deque[tuple[float, float]] = deque()

    def file_claimed(self) -> None:
        with self._lock:
            if self._in_flight == 0:
                self._active_since = time.monotonic()
            self._in_flight += 1

    def _file_left(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._active_since is not None:
            self._active_total += time.monotonic() - self._active_since
            self._active_since = None

    def file_done(self, audio_s: float, segments: int, fast_path: bool) -> None:
        with self._lock:
            self.files_done += 1
            self.segments_written += segments
            self.fast_path_skips += int(fast_path)
            self.audio_s_done += audio_s
            self._recent_audio.append((time.monotonic(), audio_s))
            self._file_left()

    def file_failed(self) -> None:
        with self._lock:
            self.files_failed += 1
            self._file_left()

    def file_requeued(self) -> None:
        with self._lock:
            self._file_left()

    def files_skipped_add(self, n: int) -> None:
        with self._lock:
            self.files_skipped += n

    def snapshot(self) -> Totals:
        now = time.monotonic()
        with self._lock:
            active = self._active_total + (
                now - self._active_since if self._active_since is not None else 0.0
            )
            while self._recent_audio and now - self._recent_audio[0][0] > WINDOW_S:
                self._recent_audio.popleft()
            recent = sum(a for _, a in self._recent_audio)
            window = min(WINDOW_S, active) if active > 0 else 0.0
            return Totals(
                files_done=self.files_done,
                files_failed=self.files_failed,
                files_skipped=self.files_skipped,
                files_in_flight=self._in_flight,
                segments_written=self.segments_written,
                fast_path_skips=self.fast_path_skips,
                audio_s_done=self.audio_s_done,
                active_wall_s=active,
                hours_per_hour=self.audio_s_done / active if active > 0 and self.audio_s_done > 0 else None,
                hours_per_hour_now=recent / window if window > 1.0 and recent > 0 else None,
            )


def mark_bottleneck(stages: list[StageSnapshot]) -> list[StageSnapshot]:
    """The stage that limits throughput: the highest recent RTF per worker, if any stage is busy."""
    loads = [(s.rtf_now / max(s.workers, 1), i) for i, s in enumerate(stages) if s.rtf_now]
    if not loads:
        return stages
    _, worst = max(loads)
    from dataclasses import replace

    return [replace(s, bottleneck=(i == worst)) for i, s in enumerate(stages)]
