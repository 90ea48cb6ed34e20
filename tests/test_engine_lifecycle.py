"""The engine's lifecycle under a stop that comes early: a stop while the models are still loading
stays a stop (it used to be overwritten by "running", and the process then exited with the loader's
native threads alive, aborting with status 134); a stop that hands files back does not wait for a
long file's work."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REAL, test_settings

from voxdock.engine.engine import Engine
from voxdock.engine.models import ModelPlan
from voxdock.storage import jobs
from voxdock.storage.database import Database

pytestmark = [pytest.mark.models, pytest.mark.slow]


def test_stop_during_model_loading_stays_stopped(db: Database, plan: ModelPlan, tmp_path: Path) -> None:
    engine = Engine(test_settings(tmp_path), db, plan)  # no preloaded models: start() loads them
    engine.start()
    assert engine.state == "loading"
    loader = next(t for t in threading.enumerate() if t.name == "voxdock-loader")
    assert engine.stop(mode="requeue") is True
    # stop() waited for the loader, which saw the stop and started nothing.
    assert not loader.is_alive()
    assert engine.state == "stopped"
    assert engine.stages == {}
    assert engine.wait_ready(0) is False
    time.sleep(1.0)
    assert engine.state == "stopped"
    assert not any(t.name.startswith(("voxdock-decode", "voxdock-asr")) for t in threading.enumerate())
    assert [e.message for e in engine.events.recent()][-1] == "engine stopped"


def test_snapshot_during_loading_has_no_stages(db: Database, plan: ModelPlan, tmp_path: Path) -> None:
    engine = Engine(test_settings(tmp_path), db, plan)
    engine.start()
    try:
        snapshot = engine.snapshot()
        assert snapshot.state == "loading" and snapshot.stages == []
        assert engine.wait_ready(300)
        assert [s.name for s in engine.snapshot().stages] == [
            "decode",
            "vad",
            "asr",
            "diarize",
            "voice",
            "text",
            "store",
        ]
    finally:
        engine.stop(mode="requeue", timeout=60)
    assert engine.state == "stopped"


def test_constructing_an_engine_loads_nothing(db: Database, plan: ModelPlan, tmp_path: Path) -> None:
    """`voxdock submit` builds an engine only to queue files: no model, no GPU library, no thread."""
    threads = set(threading.enumerate())
    engine = Engine(test_settings(tmp_path), db, plan)
    assert engine.models is None and engine.stages == {}
    assert engine.gpu._available is None  # NVML not opened
    assert set(threading.enumerate()) == threads


STAGES = ("voxdock-decode", "voxdock-vad", "voxdock-asr", "voxdock-diarize", "voxdock-voice", "voxdock-text")


def test_a_stop_that_hands_files_back_cuts_a_long_files_work_short(
    make_engine: Callable[..., Engine], db: Database, tmp_path: Path
) -> None:
    """Ctrl-C twice (or the console's re-queue) during a 20-minute file's ASR: the file goes back to
    the queue, and every stage's thread is done when stop() returns. Before, ASR ran on past the
    stop (stop() gave up on it after 10 s) and the process exiting under its model call aborted
    ("terminate called without an active exception")."""
    audio, rate = sf.read(REAL / "pyannote_sample.wav", dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(audio, 40), rate)  # 20 minutes
    engine = make_engine()
    submission = engine.submit([long])
    engine.start(wait=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not [w for w in engine.in_flight_files() if w.stage == "asr"]:
        time.sleep(0.05)
    time.sleep(1.0)  # well into its windows
    assert [w.stage for w in engine.in_flight_files()] == ["asr"]
    assert engine.stop(mode="requeue", timeout=60)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(STAGES)]
    progress = jobs.batch_progress(db, [submission.batch_id])[0]
    assert (progress.queued, progress.claimed, progress.failed, progress.done) == (1, 0, 0, 0)
    assert any(e.message == f"re-queued {long}" for e in engine.events.recent())
