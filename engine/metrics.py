"""Per-stage and engine-wide metrics, recorded from worker threads, read as cheap snapshots.

RTF (real-time factor) = processing seconds / audio seconds: busy worker-seconds over the audio they
handled, so 0.05 means a stage needs 3 s of one worker for a minute of audio. "Now" is over the last
WINDOW_S seconds, "run" since the engine started. A stage's RTF counts an item when it is finished,
busy time and audio together: time spent on an item still in work is never counted without its audio.
Snapshots are plain dataclasses (JSON-able), taken under short locks, cheap enough for every second.

Host cost: a stage's `cpu_s` is the CPU time of its worker threads in its handlers (`time.thread_time`,
Python and native work on those threads), `model_cpu_s` the part inside model calls, per model in
`models` (engine/cpu.py says how they are counted). The runtimes' own thread pools (ONNX Runtime,
CTranslate2, torch) work on no stage's thread: they are in the process's CPU (`EngineSnapshot.
process_cpu_s`) beyond the stages' sum. Like busy time, CPU is counted when an item is finished.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from voxdock.engine.cpu import ModelTime, process_cpu_seconds
from voxdock.engine.vram import VramSnapshot

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
    # Host CPU seconds of the stage's worker threads in its handlers, the part inside model calls (CPU
    # and wall), and per model (engine/cpu.py). Per audio hour: `per_audio_hour`.
    cpu_s: float = 0.0
    model_cpu_s: float = 0.0
    model_wall_s: float = 0.0
    models: dict[str, ModelTime] = field(default_factory=dict)

    @property
    def host_cpu_s(self) -> float:
        """CPU seconds outside model calls: the stage's own host work."""
        return max(0.0, self.cpu_s - self.model_cpu_s)

    def per_audio_hour(self, seconds: float) -> float | None:
        """`seconds` (e.g. `cpu_s`) per hour of the audio this stage has finished."""
        return seconds / self.audio_s * 3600.0 if self.audio_s > 0 else None


@dataclass(frozen=True)
class Totals:
    files_done: int
    files_failed: int
    files_skipped: int
    files_in_flight: int
    segments_written: int
    fast_path_skips: int
    audio_s_done: float
    active_wall_s: float  # wall seconds with some file in flight, up to now
    # Audio hours processed per hour of that wall time, counted as EngineCounters explains (completed
    # work plus reported in-flight progress, over the clock when it was counted): the run's pace, and
    # the same over a window of at least WINDOW_S. End-to-end RTF live is 1 / hours_per_hour.
    hours_per_hour: float | None
    hours_per_hour_now: float | None


@dataclass(frozen=True)
class GpuSnapshot:
    index: int
    name: str
    utilization_pct: float | None  # None: the device does not say (NVML has none for a MIG slice)
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
    # Set while the engine cannot reach the store ("database unavailable since 12:00:01, retrying").
    store_problem: str | None = None
    # CPU seconds of the whole process (every thread: the stages', the runtimes' pools, the rest) when
    # the snapshot was made; less the stages' `cpu_s`, what runs on no stage's thread.
    process_cpu_s: float = field(default_factory=process_cpu_seconds)
    # Self-tuning: whether it is on, and the knobs ("asr.workers", "text.batch") the operator set,
    # which it leaves alone until released.
    auto_tune: bool = False
    pinned: list[str] = field(default_factory=list)
    # Device memory against GPU_MEMORY_BUDGET, with each stage's measured peaks (engine/vram.py);
    # None until the engine knows its device.
    vram: VramSnapshot | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def stage(self, name: str) -> StageSnapshot:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


class StageMetrics:
    """Counters of one stage. `record` is called by workers; `snapshot` by anyone."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._audio_s = 0.0
        self._busy_s = 0.0
        self._items = 0
        self._errors = 0
        self._oom_backoffs = 0
        self._busy_workers = 0
        self._cpu_s = 0.0
        self._models: dict[str, ModelTime] = {}
        self._recent: deque[tuple[float, float, float]] = deque()  # (when, audio_s, busy_s)
        self._last: tuple[float, float, float] | None = None

    def started(self) -> None:
        with self._lock:
            self._busy_workers += 1

    def finished(self) -> None:
        with self._lock:
            self._busy_workers -= 1

    def record(
        self,
        *,
        audio_s: float,
        busy_s: float,
        items: int = 1,
        cpu_s: float = 0.0,
        models: dict[str, ModelTime] | None = None,
    ) -> None:
        """A finished item: its audio, busy seconds and, when measured, the CPU seconds of its handler
        and the model calls in it (engine/cpu.py)."""
        now = self._clock()
        with self._lock:
            self._cpu_s += cpu_s
            for name, use in (models or {}).items():
                self._models.setdefault(name, ModelTime()).add(use)
            self._audio_s += audio_s
            self._busy_s += busy_s
            self._items += items
            self._last = (now, audio_s, busy_s)
            self._recent.append(self._last)
            self._trim(now)

    def add_cpu(self, cpu_s: float) -> None:
        """CPU a worker spent on items after recording them (handing them on)."""
        with self._lock:
            self._cpu_s += cpu_s

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
        now = self._clock()
        with self._lock:
            self._trim(now)
            # A stage busy on a long item has recorded nothing lately: its last item says more about
            # "now" than a blank (and keeps it a candidate for the bottleneck).
            recent = self._recent or ([self._last] if self._last and self._busy_workers else [])
            audio_now = sum(a for _, a, _ in recent)
            busy_now = sum(b for _, _, b in recent)
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
                cpu_s=self._cpu_s,
                model_cpu_s=sum(m.cpu_s for m in self._models.values()),
                model_wall_s=sum(m.wall_s for m in self._models.values()),
                models={name: replace(m) for name, m in self._models.items()},
            )


class EngineCounters:
    """Totals across the run, and the pace: audio seconds processed per active wall second.

    The active clock runs only while some file is in flight. The pace counts completed work plus the
    progress in-flight files have reported (`file_progress`, e.g. how far ASR has transcribed), over
    the active clock *when that work was counted*. A file in flight has spent wall time whose audio is
    not counted yet; dividing by the clock now made the live pace fall (and RTF and ETA climb) for as
    long as a long file was in flight. A file that reports no progress so leaves the pace where the last
    counted work put it. Once nothing is in flight the two clocks agree, so the live figures end equal
    to the run's.

    `key` names a file across calls (any hashable, e.g. its job id); a file claimed without one can
    report no progress, and only its completion counts. `clock` is injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
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
        self._progress: dict[Hashable, float] = {}  # file in flight -> its audio seconds processed
        self._abandoned_s = 0.0  # processed audio of files that failed or went back to the queue
        self._counted_at = 0.0  # the active clock when counted work last changed
        # (active clock, audio processed) at the start and at every count; the first mark is the last
        # one at least WINDOW_S before the newest, so "now" spans a window bounded by counts.
        self._marks: deque[tuple[float, float]] = deque([(0.0, 0.0)])

    def _active(self, now: float) -> float:
        return self._active_total + (now - self._active_since if self._active_since is not None else 0.0)

    def _processed(self) -> float:
        return self.audio_s_done + self._abandoned_s + sum(self._progress.values())

    def _count(self, now: float) -> None:
        """Counted work changed: the pace's clock stops here, and the window gets a mark."""
        active = self._active(now)
        self._counted_at = active
        self._marks.append((active, self._processed()))
        while len(self._marks) > 1 and self._marks[1][0] <= active - WINDOW_S:
            self._marks.popleft()

    def file_claimed(self, key: Hashable | None = None) -> None:
        with self._lock:
            if self._in_flight == 0:
                self._active_since = self._clock()
            self._in_flight += 1
            if key is not None:
                self._progress[key] = 0.0

    def file_progress(self, key: Hashable, audio_s: float) -> None:
        """How far into its audio the processing of a file in flight has got (seconds, not a delta)."""
        with self._lock:
            if key in self._progress and audio_s > self._progress[key]:
                self._progress[key] = audio_s
                self._count(self._clock())

    def _file_left(self, key: Hashable | None, audio_s: float | None) -> None:
        """`audio_s` is the file's audio when it was finished, None when its work was given up."""
        progress = self._progress.pop(key, 0.0) if key is not None else 0.0
        if audio_s is None:
            self._abandoned_s += progress  # processed at the pace all the same
        else:
            self.audio_s_done += audio_s
        now = self._clock()
        self._count(now)
        self._in_flight -= 1
        if self._in_flight == 0 and self._active_since is not None:
            self._active_total += now - self._active_since
            self._active_since = None

    def file_done(self, audio_s: float, segments: int, fast_path: bool, key: Hashable | None = None) -> None:
        with self._lock:
            self.files_done += 1
            self.segments_written += segments
            self.fast_path_skips += int(fast_path)
            self._file_left(key, audio_s)

    def file_failed(self, key: Hashable | None = None) -> None:
        with self._lock:
            self.files_failed += 1
            self._file_left(key, None)

    def file_requeued(self, key: Hashable | None = None) -> None:
        with self._lock:
            self._file_left(key, None)

    def files_skipped_add(self, n: int) -> None:
        with self._lock:
            self.files_skipped += n

    def snapshot(self) -> Totals:
        with self._lock:
            processed = self._processed()
            counted = self._counted_at
            (start, start_audio), (end, end_audio) = self._marks[0], self._marks[-1]
            return Totals(
                files_done=self.files_done,
                files_failed=self.files_failed,
                files_skipped=self.files_skipped,
                files_in_flight=self._in_flight,
                segments_written=self.segments_written,
                fast_path_skips=self.fast_path_skips,
                audio_s_done=self.audio_s_done,
                active_wall_s=self._active(self._clock()),
                hours_per_hour=processed / counted if counted > 0 and processed > 0 else None,
                hours_per_hour_now=(
                    (end_audio - start_audio) / (end - start)
                    if end - start > 1.0 and end_audio > start_audio
                    else None
                ),
            )


def mark_bottleneck(stages: list[StageSnapshot]) -> list[StageSnapshot]:
    """The stage that limits throughput: the highest recent RTF per worker, if any stage is busy."""
    loads = [(s.rtf_now / max(s.workers, 1), i) for i, s in enumerate(stages) if s.rtf_now]
    if not loads:
        return stages
    _, worst = max(loads)
    return [replace(s, bottleneck=(i == worst)) for i, s in enumerate(stages)]
