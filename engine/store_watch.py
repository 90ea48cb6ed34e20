"""Riding out a store that goes away: a restart, a crash, a network cut.

Any engine thread whose store call fails because the server is unreachable reports it here and
waits; one watcher thread probes the server with backoff (and restarts the embedded server this
node uses when it died) and wakes everyone when it answers again. Meanwhile the engine claims
nothing, writes nothing and fails nothing: a file whose write could not be made is written again
once the store is back, so nothing is lost or doubled (a write replaces the file's rows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from voxdock.engine.events import EngineEvent
from voxdock.storage.database import Database, is_store_unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PROBE_S = 0.5
MAX_PROBE_S = 10.0


class StoreGone(RuntimeError):
    """The engine stopped while the store was still unavailable; the call was not made."""


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


class StoreWatch:
    def __init__(
        self,
        db: Database,
        emit: Callable[[EngineEvent], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self._emit = emit
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._back = threading.Event()  # set while the store answers
        self._back.set()
        self._gone = threading.Event()  # set while it does not: the watcher sleeps on this one
        self._lost_at: float | None = None  # monotonic
        self._lost_wall: float | None = None
        self._reason = ""
        self._attempts = 0
        self.outages = 0

    # --- state ---------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self._back.is_set()

    def problem(self) -> str | None:
        """One line for the console while the store is unavailable, else None."""
        with self._lock:
            if self._lost_wall is None:
                return None
            since = time.strftime("%H:%M:%S", time.localtime(self._lost_wall))
            tries = f", attempt {self._attempts}" if self._attempts else ""
            return f"database unavailable since {since}, retrying{tries}: {self._reason}"

    def lost(self, exc: BaseException) -> None:
        """A store call failed because the server is unreachable: everyone waits from now on."""
        with self._lock:
            if self._lost_at is not None:
                return
            self._lost_at = self._clock()
            self._lost_wall = self._wall()
            self._reason = _reason(exc)
            self._attempts = 0
            self.outages += 1
            self._back.clear()
            self._gone.set()
        self._emit(EngineEvent("store", f"database unavailable, retrying ({self._reason})", logging.WARNING))

    def _recovered(self) -> None:
        with self._lock:
            if self._lost_at is None:
                return
            down = self._clock() - self._lost_at
            self._lost_at = None
            self._lost_wall = None
            self._gone.clear()
            self._back.set()
        self._emit(EngineEvent("store", f"database back after {down:.1f} s; going on"))

    # --- waiting -------------------------------------------------------------------------------
    def wait_until_back(self, stopping: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until the store answers again (True), or the engine stops or time runs out (False)."""
        deadline = None if timeout is None else self._clock() + timeout
        while not self._back.wait(0.25):
            if stopping() or (deadline is not None and self._clock() >= deadline):
                return False
        return True

    def call(self, fn: Callable[[], T], stopping: Callable[[], bool]) -> T:
        """Run a store call, and while the server is unreachable wait for it and run it again.

        Only safe for calls that can be repeated (every write the engine makes replaces or sets
        rows); any other error is raised at once. Raises StoreGone when the engine stops first."""
        while True:
            if not self._back.is_set() and not self.wait_until_back(stopping):
                raise StoreGone("the engine stopped while the database was unavailable")
            try:
                return fn()
            except Exception as exc:
                if not is_store_unavailable(exc):
                    raise
                self.lost(exc)

    # --- the watcher ---------------------------------------------------------------------------
    def run(self, stopping: Callable[[], bool]) -> None:
        """The watcher loop (one thread): while the store is lost, probe it with backoff; restart
        the embedded server when this node uses one and it is down."""
        delay = FIRST_PROBE_S
        while not stopping():
            if not self._gone.wait(0.25):  # nothing lost: sleep (a wait on _back would return at once)
                delay = FIRST_PROBE_S
                continue
            with self._lock:
                self._attempts += 1
                first = self._attempts == 1
            if self._probe(first):
                self._recovered()
                continue
            # Sleep in short steps so a stop is seen at once.
            until = self._clock() + delay
            while self._clock() < until and not stopping():
                time.sleep(0.1)
            delay = min(delay * 2, MAX_PROBE_S)

    def _probe(self, first: bool) -> bool:
        try:
            self.db.ping()
            return True
        except Exception as exc:
            if not is_store_unavailable(exc):
                log.warning("probing the database failed: %s", _reason(exc))
        if first:
            # The pool's sessions are dead, or keep a server that was asked to stop from stopping.
            self.db.reset_pool()
        if self.db.embedded is None:
            return False
        try:
            restarted = self.db.restart_embedded()
        except Exception as exc:  # still down: the next probe tries again
            log.info("embedded server not restarted yet: %s", _reason(exc))
            return False
        if restarted:
            self._emit(EngineEvent("store", "the embedded PostgreSQL server is running again"))
        try:
            self.db.ping()
            return True
        except Exception:
            return False
