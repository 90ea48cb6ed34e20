"""How many files the engine holds at once: enough for every configured worker to be busy (not
2 x ASR_WORKERS + 2, which left 16 diarize workers with at most 10 files), and never more decoded
audio than the budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MEDIA, wait_for_batch

from voxdock.engine.engine import Engine, audio_budget_bytes
from voxdock.engine.events import EngineEvent
from voxdock.storage.database import Database

pytestmark = [pytest.mark.models, pytest.mark.slow]


def distinct_copies(tmp_path: Path, n: int) -> list[Path]:
    files = [tmp_path / "media" / f"copy{i}.ogg" for i in range(n)]
    files[0].parent.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):  # distinct content so none is skipped as a duplicate
        f.write_bytes((MEDIA / "monologue.ogg").read_bytes() + bytes([i]))
    return files


def test_the_budget_defaults_to_a_quarter_of_memory() -> None:
    import psutil

    assert audio_budget_bytes(None) == psutil.virtual_memory().total // 4
    assert audio_budget_bytes(0.5) == 512 * 1024**2


def test_every_worker_of_a_wide_stage_gets_a_file(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = make_engine(asr_workers=1, diarization_workers=8, decode_workers=2)
    engine.start(wait=True)
    # 2 decode + 1 vad + 1 asr + 8 diarize + 1 voice + 1 text + 1 store, and 8 waiting for diarize
    assert engine.max_in_flight() == 23
    engine.set_workers("diarize", 2)
    assert engine.max_in_flight() == 11
    engine.set_workers("diarize", 8)
    peak = 0
    batch = engine.submit(distinct_copies(tmp_path, 12)).batch_id
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        peak = max(peak, engine.files_in_flight())
        if peak > 4 and engine.files_in_flight() == 0:
            break
        time.sleep(0.02)
    wait_for_batch(engine, batch)
    assert peak > 2 * 1 + 2, "held no more files than the old 2 x ASR_WORKERS + 2"


def test_no_file_is_admitted_beyond_the_audio_budget(
    make_engine: Callable[..., Engine], db: Database, tmp_path: Path
) -> None:
    """A budget smaller than one file: a file is admitted only when no decoded audio is held (and
    none is being decoded), so at most one file's audio is in memory at any time."""
    engine = make_engine(asr_workers=2, decode_workers=2, in_flight_audio_gb=1e-6)
    held_at_claim: list[int] = []

    def on_event(event: EngineEvent) -> None:
        if event.kind == "claimed":  # called in the claim loop, the new file already in flight
            others = [w for w in engine.in_flight_files() if w.path != event.path]
            held_at_claim.append(sum(1 for w in others if w.samples is not None or w.duration_s == 0.0))

    engine.events.subscribe(on_event)
    engine.start(wait=True)
    batch = engine.submit(distinct_copies(tmp_path, 5)).batch_id
    progress = wait_for_batch(engine, batch)
    assert progress.done == 5
    assert len(held_at_claim) == 5
    assert held_at_claim == [0] * 5, held_at_claim


def test_self_tuning_leaves_what_the_operator_set(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(auto_tune=True, diarization_workers=1)  # both given: pinned
    engine.start(wait=True)
    snapshot = engine.snapshot()
    assert snapshot.auto_tune and engine.tuner is not None
    assert {"asr.workers", "diarize.workers"} <= set(snapshot.pinned)
    assert "voice.workers" not in snapshot.pinned  # left to its default: the tuner's
    assert "diarize.workers" in engine.tuner.pinned
    engine.release("diarize")
    assert "diarize.workers" not in engine.snapshot().pinned
    assert "diarize.workers" not in engine.tuner.pinned
    engine.set_workers("voice", 2)  # set live: pinned from now on
    engine.set_batch_size("text", 32)
    assert {"voice.workers", "text.batch"} <= set(engine.snapshot().pinned)
    assert "voice.workers" in engine.tuner.pinned
    messages = [e.message for e in engine.events.recent()]
    assert "diarize: released to self-tuning" in messages


def test_without_self_tuning_nothing_is_tuned(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()  # the tests' settings turn it off
    engine.start(wait=True)
    assert engine.tuner is None and not engine.snapshot().auto_tune
    assert not any(t.name == "voxdock-tuner" for t in threading.enumerate())
