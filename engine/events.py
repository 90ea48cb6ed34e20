"""Engine events (a file started, finished, failed, a batch paused, a knob changed), for the console's
log pane and the headless progress display. Subscribers are called from engine threads."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("voxdock.engine")

RECENT = 1000


@dataclass(frozen=True)
class EngineEvent:
    kind: str  # claimed, done, failed, requeued, skipped, batch, tuning, engine
    message: str
    level: int = logging.INFO
    path: str | None = None
    batch_id: int | None = None
    source_id: int | None = None
    segments: int | None = None
    duration_s: float | None = None
    at: float = field(default_factory=time.time)


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: deque[EngineEvent] = deque(maxlen=RECENT)
        self._subscribers: list[Callable[[EngineEvent], None]] = []

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: EngineEvent) -> None:
        log.log(event.level, "%s", event.message)
        with self._lock:
            self._recent.append(event)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break the engine
                log.debug("event subscriber failed", exc_info=True)

    def recent(self, limit: int = RECENT) -> list[EngineEvent]:
        with self._lock:
            return list(self._recent)[-limit:]
