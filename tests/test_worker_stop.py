"""`voxdock worker` stopped by its service manager (SIGTERM): the files in flight get --grace seconds to
finish, then go back to the queue for another node at once, and the process exits 0 well before the
manager's kill. Before, it waited for them however long they took (a 3-hour file: the kill came first,
and the file sat claimed until its lease ran out)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REAL, run_voxdock

from voxdock.storage import jobs
from voxdock.storage.database import Database

pytestmark = [pytest.mark.models, pytest.mark.slow]


def worker_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "VOXDOCK_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
        "AUTO_TUNE": "false",
    }


@contextlib.contextmanager
def running_worker(env: dict[str, str], tmp_path: Path, grace: str) -> Iterator[subprocess.Popen[str]]:
    """`voxdock worker --grace GRACE`, its output on one pipe; killed on the way out if still running."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "voxdock", "worker", "--grace", grace],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_sigterm_hands_a_long_file_back_after_the_grace(
    empty_db_url: str, db: Database, tmp_path: Path
) -> None:
    audio, rate = sf.read(REAL / "pyannote_sample.wav", dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(audio, 40), rate)  # 20 minutes: its ASR alone takes minutes here
    env = worker_env(empty_db_url, tmp_path)
    submitted = run_voxdock(tmp_path, "submit", str(long), "--batch", "long", env=env)
    assert submitted.returncode == 0, submitted.stderr
    (batch,) = jobs.batch_progress(db)
    with running_worker(env, tmp_path, "2") as worker:
        deadline = time.monotonic() + 180
        while jobs.batch_progress(db, [batch.id])[0].claimed == 0:
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(3.0)  # into its ASR
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=90)
    assert worker.returncode == 0, output
    assert "finishing the files in flight for up to 2 s, then re-queuing the rest" in output
    progress = jobs.batch_progress(db, [batch.id])[0]
    assert (progress.queued, progress.claimed, progress.done, progress.failed) == (1, 0, 0, 0)
    assert "Traceback" not in output and "terminate called" not in output


def test_sigterm_while_the_models_load_waits_for_them_and_exits_cleanly(
    empty_db_url: str, tmp_path: Path
) -> None:
    """Loading cannot be cut short: a stop during it waits for it, whatever --grace says, and the
    process exits 0 (leaving while the runtimes' threads load aborted it: status -6, "terminate
    called without an active exception")."""
    with running_worker(worker_env(empty_db_url, tmp_path), tmp_path, "0") as worker:
        assert worker.stdout is not None
        seen = ""
        while "working on" not in seen:  # printed as the models start loading
            line = worker.stdout.readline()
            assert line, seen
            seen += line
        time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, seen + output
    assert "re-queuing the files in flight" in output
    assert "terminate called" not in output and "Traceback" not in output
