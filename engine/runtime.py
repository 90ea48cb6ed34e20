"""Stages as worker pools joined by bounded queues, with worker count and batch size live-tunable.

A stage takes files from its inbox, runs its handler, and passes them to its outbox. Per-file stages
take one file at a time; a batched stage takes several files at once, until their units (segments)
fill its batch, so short files still fill a GPU batch. A stage knows nothing about the stage after it.

Tuning: `set_workers` starts threads at once or lets surplus ones retire after their current file;
a new batch size (set on the stage's shared AdaptiveBatch) applies to the next batch formed. Workers
wait on their inbox with a short timeout, so both changes take effect well within a second, and no
file is dropped or handled twice.

Host cost: each handler call's CPU time on its worker thread, and the part inside model calls, go to
the stage's metrics (engine/cpu.py); so does the CPU of handing the files on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from voxdock.engine.config import MAX_WORKERS
from voxdock.engine.cpu import HandlerCost
from voxdock.engine.metrics import StageMetrics, StageSnapshot
from voxdock.engine.oom import AdaptiveBatch
from voxdock.engine.store_watch import StoreGone
from voxdock.engine.work import FileWork
from voxdock.storage.database import is_store_unavailable

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often an idle worker looks at its inbox, retirement and stop flags
# Engine threads run at a lower CPU priority than the thread that creates the engine (the console's
# UI thread), so a saturated machine still answers a key press at once. Native threads that the
# model libraries start from an engine thread inherit it.
ENGINE_NICE = 10
LINGER_S = 0.1  # how long a batched stage waits for more files to fill a batch


class PipelineContext(Protocol):
    """What stages need from the engine that runs them."""

    @property
    def aborting(self) -> bool: ...

    @property
    def shutting_down(self) -> bool: ...

    def files_in_flight(self) -> int: ...

    def fail(self, work: FileWork, stage: str, reason: str) -> None: ...

    def requeue(self, work: FileWork) -> None: ...


class FileFailed(Exception):
    """Raised by a handler: this file fails with this reason (one line, no path)."""


class HandedBack(Exception):
    """Raised by a handler that gave up a file part-way because the engine is handing its files back
    (a stop that re-queues): the file goes back to the queue, not to the failed."""


class Stage:
    def __init__(
        self,
        name: str,
        ctx: PipelineContext,
        inbox: queue.Queue[FileWork],
        outbox: queue.Queue[FileWork] | None,
        *,
        workers: int,
        handle: Callable[[FileWork], None] | None = None,
        handle_many: Callable[[list[FileWork]], None] | None = None,
        units: Callable[[FileWork], int] | None = None,
        batch: AdaptiveBatch | None = None,
        gate: Callable[[FileWork], bool] | None = None,
    ) -> None:
        if (handle is None) == (handle_many is None):
            raise ValueError("a stage has exactly one of handle / handle_many")
        self.name = name
        self.ctx = ctx
        self.inbox = inbox
        self.outbox = outbox
        self.metrics = StageMetrics(name)
        self.batch = batch
        self._handle = handle
        self._handle_many = handle_many
        self._units = units or (lambda _w: 1)
        self._gate = gate  # False: the file must not start here (its batch was paused): give it back
        self._lock = threading.Lock()
        self._target = 0
        self._alive = 0
        self._threads: list[threading.Thread] = []
        self._serial = 0
        self._initial_workers = workers

    # --- control -------------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        with self._lock:
            return self._target

    def start(self) -> None:
        self.set_workers(self._initial_workers)

    def set_workers(self, n: int) -> None:
        if not 1 <= n <= MAX_WORKERS:
            raise ValueError(f"{self.name}: workers must be between 1 and {MAX_WORKERS}, not {n}")
        with self._lock:
            self._target = n
            while self._alive < self._target:
                self._alive += 1
                self._serial += 1
                thread = threading.Thread(
                    target=self._run, name=f"voxdock-{self.name}-{self._serial}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def snapshot(self) -> StageSnapshot:
        return self.metrics.snapshot(
            queue_depth=self.inbox.qsize(),
            workers=self.workers,
            batch_size=self.batch.configured if self.batch else None,
            batch_size_now=self.batch.current if self.batch else None,
        )

    # --- workers -------------------------------------------------------------------------------
    def _retire_if_surplus(self) -> bool:
        with self._lock:
            if self._alive > self._target or self.ctx.shutting_down:
                self._alive -= 1
                return True
            return False

    def _run(self) -> None:
        lower_thread_priority()
        while not self._retire_if_surplus():
            works = self._take()
            if not works:
                continue
            if self.ctx.aborting:
                for work in works:
                    self.ctx.requeue(work)
                continue
            if self._gate is not None:
                allowed = [w for w in works if self._gate(w)]
                for work in works:
                    if work not in allowed:
                        self.ctx.requeue(work)
                works = allowed
                if not works:
                    continue
            self._process(works)

    def _take(self) -> list[FileWork]:
        try:
            first = self.inbox.get(timeout=POLL_S)
        except queue.Empty:
            return []
        works = [first]
        if self._handle_many is None or self.batch is None:
            return works
        units = self._units(first)
        deadline = time.monotonic() + LINGER_S
        while units < self.batch.configured:
            remaining = deadline - time.monotonic()
            waiting_elsewhere = self.ctx.files_in_flight() > len(works) + self.inbox.qsize()
            try:
                work = (
                    self.inbox.get_nowait()
                    if remaining <= 0 or not waiting_elsewhere
                    else self.inbox.get(timeout=remaining)
                )
            except queue.Empty:
                break
            works.append(work)
            units += self._units(work)
        return works

    def _process(self, works: list[FileWork]) -> None:
        for work in works:
            work.stage = self.name
        self.metrics.started()
        start = time.perf_counter()
        cost = HandlerCost()
        cost.start()
        failed: set[int] = set()
        handed_back = False
        try:
            if self._handle_many is not None:
                self._handle_many(works)
            else:
                assert self._handle is not None
                self._handle(works[0])
        except FileFailed as exc:
            failed = {id(w) for w in works}
            self._fail_all(works, str(exc))
        except Exception as exc:
            failed = {id(w) for w in works}
            if isinstance(exc, HandedBack | StoreGone) or is_store_unavailable(exc):
                # Not the file's fault: the engine is handing files back, or the store went away (and
                # the engine is stopping). Hand it back.
                handed_back = True
                for work in works:
                    self.ctx.requeue(work)
            else:  # a bug or a model error: the file fails, the engine goes on
                log.debug("%s failed", self.name, exc_info=True)
                self._fail_all(works, f"{type(exc).__name__}: {_one_line(exc)}")
        finally:
            self.metrics.finished()
            cost.stop()
        busy = time.perf_counter() - start
        self.metrics.record(  # a file handed back part-way was not processed: its time only
            audio_s=0.0 if handed_back else sum(w.duration_s for w in works),
            busy_s=busy,
            items=0 if handed_back else len(works),
            cpu_s=cost.cpu_s,
            models=cost.models,
        )
        handing_on = time.thread_time()
        share = busy / len(works)
        for work in works:
            if id(work) in failed:
                continue
            work.stage_seconds[self.name] = work.stage_seconds.get(self.name, 0.0) + share
            if self.outbox is not None:  # the last stage's handler finishes the file itself
                self._forward(work)
        self.metrics.add_cpu(time.thread_time() - handing_on)

    def _fail_all(self, works: list[FileWork], reason: str) -> None:
        self.metrics.error()
        for work in works:
            self.ctx.fail(work, self.name, reason)

    def _forward(self, work: FileWork) -> None:
        assert self.outbox is not None
        while True:
            if self.ctx.aborting:
                self.ctx.requeue(work)
                return
            try:
                self.outbox.put(work, timeout=POLL_S)
                return
            except queue.Full:
                continue


def lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux threads have their own nice value)."""
    # Not Linux, or not allowed: run at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ENGINE_NICE)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
