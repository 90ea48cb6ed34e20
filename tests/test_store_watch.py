"""The store watch on a stand-in database: it sleeps while the store answers, probes with backoff
while it does not, and wakes every waiting caller when it is back."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from voxdock.engine.events import EngineEvent
from voxdock.engine.store_watch import StoreGone, StoreWatch


class FlakyDb:
    """Refuses `down` pings, then answers."""

    embedded = None

    def __init__(self, down: int = 0) -> None:
        self.down = down
        self.pings = 0
        self.resets = 0

    def ping(self) -> None:
        self.pings += 1
        if self.pings <= self.down:
            raise psycopg.OperationalError("connection refused")

    def reset_pool(self) -> None:
        self.resets += 1


def run_watch(watch: StoreWatch, stop: threading.Event) -> tuple[threading.Thread, list[float]]:
    cpu: list[float] = []

    def body() -> None:
        watch.run(stop.is_set)
        cpu.append(time.thread_time())

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, cpu


def test_an_idle_watch_sleeps() -> None:
    db = FlakyDb()
    watch = StoreWatch(db, lambda _e: None)  # type: ignore[arg-type]
    stop = threading.Event()
    thread, cpu = run_watch(watch, stop)
    time.sleep(1.5)
    stop.set()
    thread.join(2)
    assert cpu and cpu[0] < 0.1, f"the idle watcher used {cpu[0]:.2f} s of CPU in 1.5 s"
    assert db.pings == 0


def test_an_outage_is_probed_until_the_store_answers_and_waiters_go_on() -> None:
    db = FlakyDb(down=3)
    events: list[EngineEvent] = []
    watch = StoreWatch(db, events.append)  # type: ignore[arg-type]
    stop = threading.Event()
    thread, _ = run_watch(watch, stop)
    calls = {"n": 0}

    def write() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return "written"

    assert watch.call(write, lambda: False) == "written"  # waited through the outage, then wrote
    stop.set()
    thread.join(2)
    assert calls["n"] == 2 and db.pings == 4 and db.resets == 1
    messages = [e.message for e in events]
    assert messages[0].startswith("database unavailable, retrying")
    assert messages[-1].startswith("database back after")
    assert watch.available and watch.problem() is None


def test_a_stop_during_an_outage_gives_up_the_call() -> None:
    watch = StoreWatch(FlakyDb(down=10**6), lambda _e: None)  # type: ignore[arg-type]
    watch.lost(psycopg.OperationalError("gone"))
    assert watch.problem() is not None and "database unavailable since" in str(watch.problem())
    with pytest.raises(StoreGone):
        watch.call(lambda: None, lambda: True)


def test_a_query_error_is_not_an_outage() -> None:
    watch = StoreWatch(FlakyDb(), lambda _e: None)  # type: ignore[arg-type]

    def bad() -> None:
        raise psycopg.errors.UndefinedTable("no such table")

    with pytest.raises(psycopg.errors.UndefinedTable):
        watch.call(bad, lambda: False)
    assert watch.available
