"""The database goes away under a running engine (killed, stopped, restarted later) and the engine
rides it out: it says so, claims and writes nothing meanwhile, and goes on when the server is back,
with every file stored once and none failed. Each test runs its own embedded server, since it
kills it."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MEDIA, TEST_SPEC, test_settings

from voxdock.engine.engine import Engine
from voxdock.engine.events import EngineEvent
from voxdock.engine.loader import LoadedModels
from voxdock.engine.models import ModelPlan
from voxdock.storage import jobs
from voxdock.storage.database import POOL_WAIT_S, Database
from voxdock.storage.embedded import restart_embedded
from voxdock.storage.migrate import migrate

pytestmark = [pytest.mark.models, pytest.mark.slow]

FILES = (
    "real/ami_trn03.wav",
    "real/pyannote_sample.wav",
    "real/jfk.wav",
    "real/sb_LJ050-0131.wav",
    "dialogue_2spk.wav",
    "monologue.ogg",
)


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pg18" / "postmaster.pid").read_text().splitlines()[0])


def wait_until_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"postmaster {pid} still running after {timeout} s")


class Recorder:
    """Engine events and the problems the snapshot reported, as the console would see them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.events: list[EngineEvent] = []
        self.problems: list[str] = []
        self._stop = threading.Event()
        engine.events.subscribe(self.events.append)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            problem = self.engine.snapshot().store_problem
            if problem:
                self.problems.append(problem)

    def done_count(self) -> int:
        return sum(1 for e in self.events if e.kind == "done")

    def wait_done(self, n: int, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while self.done_count() < n:
            assert time.monotonic() < deadline, f"fewer than {n} files done: {self.messages()}"
            time.sleep(0.05)

    def messages(self) -> list[str]:
        return [e.message for e in self.events]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[Database, Path]]:
    """A fresh embedded server and a migrated store on it, both this test's alone."""
    data_dir = tmp_path / "data"
    database = Database.open(None, data_dir, max_size=12)
    migrate(database, TEST_SPEC)
    yield database, data_dir
    database.close()


def run_with_outage(
    db: Database,
    data_dir: Path,
    plan: ModelPlan,
    models: LoadedModels,
    tmp_path: Path,
    outage: Callable[[], None],
) -> tuple[Engine, Recorder, int, list[Path]]:
    media = tmp_path / "media"
    media.mkdir()
    paths = [Path(shutil.copy(MEDIA / name, media / Path(name).name)) for name in FILES]
    engine = Engine(test_settings(data_dir, job_lease_seconds=20), db, plan, models=models)
    recorder = Recorder(engine)
    engine.start(wait=True, timeout=120)
    batch = engine.submit([media]).batch_id
    recorder.wait_done(1)
    outage()
    deadline = time.monotonic() + 300
    while True:
        try:
            progress = jobs.batch_progress(db, [batch])[0]
            if progress.queued + progress.claimed == 0 and engine.files_in_flight() == 0:
                break
        except Exception:  # the test's own reads fail during the outage too
            pass
        assert time.monotonic() < deadline, f"batch not finished: {recorder.messages()}"
        time.sleep(0.2)
    engine.stop(timeout=60)
    recorder.close()
    return engine, recorder, batch, paths


def assert_stored_once(db: Database, batch: int, paths: list[Path]) -> None:
    progress = jobs.batch_progress(db, [batch])[0]
    assert (progress.done, progress.failed, progress.queued, progress.claimed) == (len(paths), 0, 0, 0)
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT s.path, s.status, s.segment_count, count(g.id), count(DISTINCT g.seq)"
            " FROM sources s LEFT JOIN segments g ON g.source_id = s.id GROUP BY s.id"
        ).fetchall()
        jobs_per_source = conn.execute(
            "SELECT source_id, count(*) FROM jobs WHERE batch_id = %s GROUP BY source_id", (batch,)
        ).fetchall()
    assert {Path(r[0]).name for r in rows} == {p.name for p in paths}
    for path, status, segment_count, rows_stored, distinct_seq in rows:
        assert status == "done", (path, status)
        assert segment_count == rows_stored == distinct_seq, f"{path}: segments lost or doubled"
    assert all(n == 1 for _, n in jobs_per_source)


def test_engine_restarts_its_embedded_server_killed_mid_batch(
    own_server: tuple[Database, Path], plan: ModelPlan, models: LoadedModels, tmp_path: Path
) -> None:
    db, data_dir = own_server
    killed: list[int] = []

    def kill() -> None:
        killed.append(postmaster_pid(data_dir))
        os.kill(killed[0], signal.SIGKILL)

    engine, recorder, batch, paths = run_with_outage(db, data_dir, plan, models, tmp_path, kill)
    assert postmaster_pid(data_dir) != killed[0], "the engine did not start the server again"
    messages = recorder.messages()
    assert any(m.startswith("database unavailable, retrying") for m in messages), messages
    assert any(m.startswith("database back after") for m in messages), messages
    assert "the embedded PostgreSQL server is running again" in messages
    assert recorder.problems and recorder.problems[0].startswith("database unavailable since")
    assert engine.snapshot().store_problem is None
    assert not any(e.kind == "failed" for e in recorder.events)
    assert_stored_once(db, batch, paths)


@pytest.mark.parametrize(
    ("stop_signal", "down_s"),
    [(signal.SIGINT, 5.0), (signal.SIGKILL, 60.0)],
    ids=["fast-stop-back-after-5s", "killed-back-after-60s"],
)
def test_engine_waits_for_a_server_it_does_not_own(
    own_server: tuple[Database, Path],
    plan: ModelPlan,
    models: LoadedModels,
    tmp_path: Path,
    stop_signal: signal.Signals,
    down_s: float,
) -> None:
    """A server named by DATABASE_URL (here the same embedded one, opened by URL) is someone else's
    to restart: the engine waits with backoff, then goes on."""
    owner, data_dir = own_server
    db = Database(owner.url, max_size=12)  # not embedded: the engine may not restart it
    restarted_at: list[float] = []

    def stop_then_restart_later() -> None:
        pid = postmaster_pid(data_dir)
        os.kill(pid, stop_signal)
        wait_until_gone(pid)

        def restart() -> None:
            time.sleep(down_s)
            restart_embedded(data_dir, timeout_s=30)
            restarted_at.append(time.monotonic())

        threading.Thread(target=restart, daemon=True).start()

    try:
        _, recorder, batch, paths = run_with_outage(
            db, data_dir, plan, models, tmp_path, stop_then_restart_later
        )
        assert restarted_at, "the batch finished without the server"
        messages = recorder.messages()
        assert "the embedded PostgreSQL server is running again" not in messages
        if down_s > POOL_WAIT_S:  # a shorter outage may pass inside one wait for a connection
            assert any(m.startswith("database unavailable, retrying") for m in messages), messages
            back = [m for m in messages if m.startswith("database back after")]
            assert back and float(back[0].split()[3]) >= down_s - POOL_WAIT_S
        assert not any(e.kind == "failed" for e in recorder.events)
        assert_stored_once(db, batch, paths)
    finally:
        db.close()
