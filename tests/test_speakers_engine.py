"""The engine names speakers as it stores files: real voices, real models, the store hook in
replace_segments; enrolling later and reprocessing relabel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for_batch
from test_engine import copy_media

from voxdock.engine.decode import decode_file
from voxdock.engine.engine import Engine
from voxdock.engine.enrollment import clip_print
from voxdock.engine.loader import LoadedModels
from voxdock.evaluation import write_wav
from voxdock.storage.database import Database
from voxdock.storage.sources import find_sources
from voxdock.storage.speakers import enroll_from_source, enroll_print, file_speakers, list_speakers

pytestmark = [pytest.mark.slow, pytest.mark.models]


def first_half(source: Path, target: Path) -> Path:
    samples = decode_file(source).samples
    return write_wav(target, samples[: samples.shape[0] // 2])


def named(db: Database, path: Path) -> set[str | None]:
    (source,) = find_sources(db, str(path.resolve()))
    return {s.name for s in file_speakers(db, source.id)}


def test_files_are_named_when_stored_and_relabelled_when_enrolled_later(
    make_engine: Callable[..., Engine], db: Database, models: LoadedModels, tmp_path: Path
) -> None:
    jfk, lj = copy_media(tmp_path, "real/jfk.wav", "real/sb_LJ050-0131.wav")
    clip = clip_print(first_half(jfk, tmp_path / "jfk_clip.wav"), models.voice)
    enroll_print(db, "JFK", clip.vector, clip.speech_s, "jfk_clip.wav")

    engine = make_engine()
    engine.start()
    assert wait_for_batch(engine, engine.submit([jfk, lj]).batch_id).done == 2
    assert named(db, jfk) == {"JFK"}  # matched as it was stored
    assert named(db, lj) == {None}

    (lj_source,) = find_sources(db, str(lj.resolve()))
    enroll_from_source(db, "Linda", lj_source.id)
    assert named(db, lj) == {"Linda"} and named(db, jfk) == {"JFK"}

    # Processed again: the new segments are named in the same write.
    again = engine.submit([jfk], skip_existing=False)
    assert wait_for_batch(engine, again.batch_id).done == 1
    assert named(db, jfk) == {"JFK"}
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*), count(speaker_id) FROM segments g JOIN sources s ON s.id = g.source_id"
            " WHERE s.path = %s",
            (str(jfk.resolve()),),
        ).fetchone()
    assert row is not None and row[0] > 0 and row[0] == row[1]
    assert {s.name: s.files for s in list_speakers(db)} == {"JFK": 1, "Linda": 1}
    assert np.isclose(np.linalg.norm(clip.vector), 1.0)
