"""One model call for the work of many threads: a batcher that worker threads share.

On a GPU host a stage runs many workers, each on its own file. Each worker alone would call the
model with its own file's few items (a short file has a handful of segmentation chunks or speaker
units) and leave the GPU mostly idle. A `SharedBatcher` gathers what all workers have asked for:
the first caller to find the model free becomes the runner and calls it on everything queued (the
other workers' items too), in batches of the stage's adaptive size, until the queue is empty; the
others wait for their results. No extra thread, nothing to shut down, and one worker alone gets
exactly its own batches. Items that cannot share a batch (different shapes) carry different
`group` keys and are run apart.

Out-of-memory: each call goes through the stage's `AdaptiveBatch`, which halves and retries the
same items; an error reaches exactly the callers whose items were in the failing call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from voxdock.engine.oom import AdaptiveBatch

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Request(Generic[T, R]):
    items: Sequence[T]
    results: list[R | None]
    remaining: int
    error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.remaining == 0 or self.error is not None


class SharedBatcher(Generic[T, R]):
    """`map(items)` from any thread; calls `run(batch)` with items of one group at a time."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], list[R]],
        batch: AdaptiveBatch,
        *,
        group: Callable[[T], Hashable] | None = None,
    ) -> None:
        self._run = run
        self.batch = batch
        self._group = group or (lambda _item: None)
        self._cond = threading.Condition()
        self._queue: deque[tuple[_Request[T, R], int]] = deque()
        self._running = False
        # For tests and benchmarks: model calls made, and the wall and process-CPU seconds spent in
        # them (the host work of a stage is its CPU time outside these).
        self.calls = 0
        self.model_seconds = 0.0
        self.model_cpu_seconds = 0.0

    def map(self, items: Sequence[T]) -> list[R]:
        """One result per item, in order; the model's error if a call with these items failed."""
        if not items:
            return []
        request: _Request[T, R] = _Request(items, [None] * len(items), len(items))
        with self._cond:
            self._queue.extend((request, i) for i in range(len(items)))
        while True:
            with self._cond:
                while not request.finished and self._running:
                    self._cond.wait()
                if request.finished:
                    break
                self._running = True
            try:
                self._drain()
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return list(request.results)  # type: ignore[arg-type]

    def _take(self) -> list[tuple[_Request[T, R], int]]:
        """What is queued in the group of the oldest item (in order), up to four batches' worth."""
        with self._cond:
            if not self._queue:
                return []
            first_request, first_index = self._queue[0]
            key = self._group(first_request.items[first_index])
            limit = max(1, self.batch.current) * 4
            taken: list[tuple[_Request[T, R], int]] = []
            kept: deque[tuple[_Request[T, R], int]] = deque()
            for entry in self._queue:
                request, index = entry
                if request.error is None and len(taken) < limit and self._group(request.items[index]) == key:
                    taken.append(entry)
                elif request.error is None:
                    kept.append(entry)
            self._queue = kept
            return taken

    def _drain(self) -> None:
        def counted(chunk: Sequence[T]) -> list[R]:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return self._run(chunk)
            finally:
                self.calls += 1
                self.model_seconds += time.perf_counter() - wall
                self.model_cpu_seconds += time.process_time() - cpu

        while taken := self._take():
            # One call's worth at a time: an error reaches the callers of that call only, and the
            # results of the calls before it are delivered.
            size = max(1, self.batch.current)
            for start in range(0, len(taken), size):
                part = taken[start : start + size]
                inputs = [request.items[index] for request, index in part]
                try:
                    outputs = self.batch.map(inputs, counted)
                except Exception as exc:
                    with self._cond:
                        for request, _ in part:
                            request.error = exc
                        self._cond.notify_all()
                    continue
                with self._cond:
                    for (request, index), output in zip(part, outputs, strict=True):
                        request.results[index] = output
                        request.remaining -= 1
                    self._cond.notify_all()
