"""What the console reads and what it can ask for, behind one small interface.

`EngineBackend` wraps the in-process engine (the only backend in production). The console gathers a
`ConsoleData` off the UI thread (in a Textual thread worker) and renders only from that; the UI
thread never calls the engine or the database itself.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from voxdock.engine.engine import BatchProgress, Engine, JobRow, NodeRow, Submission
from voxdock.engine.events import EngineEvent
from voxdock.engine.metrics import EngineSnapshot, GpuSnapshot


@dataclass(frozen=True)
class ConsoleData:
    snapshot: EngineSnapshot
    batches: list[BatchProgress]
    files: list[JobRow]  # of the selected batch
    selected_batch: int | None
    nodes: list[NodeRow]
    gpu_history: dict[int, list[GpuSnapshot]] = field(default_factory=dict)
    in_flight: list[tuple[str, str]] = field(default_factory=list)  # (path, stage)
    error: str | None = None  # the last gather failed (e.g. the database is unreachable)


class ConsoleBackend(Protocol):
    @property
    def node_id(self) -> str: ...

    def gather(self, selected_batch: int | None) -> ConsoleData: ...

    def drain_events(self) -> list[EngineEvent]: ...

    def files_in_flight(self) -> int: ...

    def pause(self, batch_id: int) -> None: ...

    def resume(self, batch_id: int) -> None: ...

    def cancel(self, batch_id: int) -> None: ...

    def retry(self, batch_id: int) -> None: ...

    def release(self, stage: str) -> None: ...

    def set_workers(self, stage: str, workers: int) -> None: ...

    def set_batch_size(self, stage: str, size: int) -> None: ...

    def set_fast_path_threshold(self, value: float) -> None: ...

    def submit(
        self,
        paths: Iterable[str | Path],
        batch_name: str | None = None,
        options: dict[str, int] | None = None,
    ) -> Submission: ...

    def stop(self, mode: str) -> bool: ...


class EngineBackend:
    """The console's view of a live Engine. Events are buffered here until the UI drains them, so an
    engine thread never waits for the screen."""

    def __init__(self, engine: Engine, *, event_buffer: int = 2000) -> None:
        self.engine = engine
        self._events: deque[EngineEvent] = deque(maxlen=event_buffer)
        self._lock = threading.Lock()
        for event in engine.events.recent():
            self._events.append(event)
        self._unsubscribe = engine.events.subscribe(self._on_event)

    @property
    def node_id(self) -> str:
        return self.engine.node_id

    def _on_event(self, event: EngineEvent) -> None:
        with self._lock:
            self._events.append(event)

    def drain_events(self) -> list[EngineEvent]:
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    def gather(self, selected_batch: int | None) -> ConsoleData:
        engine = self.engine
        snapshot = engine.snapshot()
        batches = engine.batches()
        if selected_batch is None and batches:
            selected_batch = batches[0].id
        files = engine.batch_files(selected_batch) if selected_batch is not None else []
        history = {g.index: engine.gpu.history(g.index) for g in snapshot.gpus}
        in_flight = [(w.path, w.stage) for w in sorted(engine.in_flight_files(), key=lambda w: w.claimed_at)]
        return ConsoleData(
            snapshot=snapshot,
            batches=batches,
            files=files,
            selected_batch=selected_batch,
            nodes=engine.cluster_nodes(),
            gpu_history=history,
            in_flight=in_flight,
        )

    def files_in_flight(self) -> int:
        return self.engine.files_in_flight()

    def pause(self, batch_id: int) -> None:
        self.engine.pause(batch_id)

    def resume(self, batch_id: int) -> None:
        self.engine.resume(batch_id)

    def cancel(self, batch_id: int) -> None:
        self.engine.cancel(batch_id)

    def retry(self, batch_id: int) -> None:
        self.engine.retry(batch_id)

    def release(self, stage: str) -> None:
        self.engine.release(stage)

    def set_workers(self, stage: str, workers: int) -> None:
        self.engine.set_workers(stage, workers)

    def set_batch_size(self, stage: str, size: int) -> None:
        self.engine.set_batch_size(stage, size)

    def set_fast_path_threshold(self, value: float) -> None:
        self.engine.set_fast_path_threshold(value)

    def submit(
        self,
        paths: Iterable[str | Path],
        batch_name: str | None = None,
        options: dict[str, int] | None = None,
    ) -> Submission:
        return self.engine.submit(paths, batch_name=batch_name, options=options)

    def stop(self, mode: str) -> bool:
        self._unsubscribe()
        return self.engine.stop(mode=mode)
