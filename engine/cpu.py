"""Host CPU accounting: what a stage's worker threads spend, and how much of it inside model calls.

A stage (engine/runtime.py) reads the CPU time of its worker thread around each handler call with
`time.thread_time()`: Python and native work done on that thread, whatever library does it. Model call
sites (faster-whisper, Silero VAD, segmentation-3.0, CAM++, the text model) wrap their calls in
`model_call(name)`, which adds the calling thread's CPU and wall seconds inside the call to a
per-thread tally that the stage takes after the handler (`take_model_time`). So a stage knows its CPU
and the part spent in model calls; what is left is its host work (decoding, features, clustering,
Python glue, writes).

- A call nested in another model call (CTranslate2 inside faster-whisper; Silero VAD inside it when
  it is not handed the regions) is counted under its own name and left out of the outer one's
  figures: per model, the seconds are its own, and their sum is the time inside the outermost calls.
- A `SharedBatcher` (engine/batching.py) lets one thread run a model call for the items of several
  threads: the call is counted on the thread that runs it, so on that thread's stage.
- Work a child process does for a handler (the decode stage's decoders, engine/decode_process.py)
  is reported by the child and added to the handler's CPU (`add_cpu_elsewhere`): the stage's host
  cost stays the same wherever the work runs. It is not in the process's CPU.
- Work done on the runtimes' own thread pools (ONNX Runtime's intra-op threads, CTranslate2's workers,
  torch's OpenMP threads) is on no stage's thread: it shows in the process's CPU
  (`process_cpu_seconds`), less what the stages counted.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class ModelTime:
    """Seconds one thread spent inside calls of one model (nested model calls left out)."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    calls: int = 0

    def add(self, other: ModelTime) -> None:
        self.cpu_s += other.cpu_s
        self.wall_s += other.wall_s
        self.calls += other.calls


class _Tally(threading.local):
    def __init__(self) -> None:
        # One entry per open model call on this thread: [cpu, wall] of the calls nested in it.
        self.open: list[list[float]] = []
        self.models: dict[str, ModelTime] = {}
        self.elsewhere = 0.0  # CPU seconds child processes spent for this thread's handler


_tally = _Tally()


@contextmanager
def model_call(name: str) -> Iterator[None]:
    """Count the calling thread's CPU and wall seconds in this block as `name`'s."""
    nested = [0.0, 0.0]
    _tally.open.append(nested)
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        yield
    finally:
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        _tally.open.pop()
        if _tally.open:  # the enclosing call leaves these seconds to this one
            _tally.open[-1][0] += cpu
            _tally.open[-1][1] += wall
        entry = _tally.models.get(name)
        if entry is None:
            entry = _tally.models[name] = ModelTime()
        entry.cpu_s += max(0.0, cpu - nested[0])
        entry.wall_s += max(0.0, wall - nested[1])
        entry.calls += 1


def take_model_time() -> dict[str, ModelTime]:
    """What the calling thread spent in model calls since the last take, per model; starts afresh."""
    models = _tally.models
    _tally.models = {}
    return models


def add_cpu_elsewhere(seconds: float) -> None:
    """CPU seconds a child process spent on the calling thread's current handler call."""
    _tally.elsewhere += max(0.0, seconds)


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process, every thread of it (the runtimes' pools included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class HandlerCost:
    """The CPU of one handler call on the calling thread, and the part inside model calls.

    `start()` before the handler, `stop()` after it (same thread)."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.models: dict[str, ModelTime] = {}
        self._started = 0.0

    def start(self) -> None:
        take_model_time()  # model calls made outside a handler are nobody's
        _tally.elsewhere = 0.0
        self._started = time.thread_time()

    def stop(self) -> None:
        self.cpu_s = time.thread_time() - self._started + _tally.elsewhere
        _tally.elsewhere = 0.0
        self.models = take_model_time()
