"""Migrations, the store's recorded models, and the status report."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from conftest import TEST_SPEC

from voxdock.storage.database import Database
from voxdock.storage.jobs import FileEntry, batch_progress, create_batch, enqueue, register_sources
from voxdock.storage.migrate import StoreMismatch, available_migrations, current_version, migrate
from voxdock.storage.status import store_status


def test_migrations_are_ordered_and_applied_once(empty_db_url: str) -> None:
    with Database(empty_db_url) as db:
        applied = migrate(db, TEST_SPEC)
        assert [m.version for m in applied] == [m.version for m in available_migrations()]
        assert migrate(db, TEST_SPEC) == []
        with db.connection() as conn:
            assert current_version(conn) == len(available_migrations())
            recorded = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert recorded[0] == (1, "initial")


def test_vector_columns_follow_the_configured_models(empty_db_url: str) -> None:
    spec = dataclasses.replace(
        TEST_SPEC, text_model="bge-base", text_dim=768, voice_dim=256, voice_model="wespeaker"
    )
    with Database(empty_db_url) as db:
        migrate(db, spec)
        with db.connection() as conn:
            dims = dict(
                conn.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                    " WHERE attrelid = 'segments'::regclass AND attname LIKE '%%embedding'"
                ).fetchall()
            )
    assert dims == {"text_embedding": "vector(768)", "voice_embedding": "vector(256)"}


def test_opening_a_store_made_with_other_models_is_refused_and_data_kept(db: Database) -> None:
    register_sources(db, [FileEntry("/keep.wav", 1, "h")])
    other = dataclasses.replace(TEST_SPEC, text_model="gte-qwen2-1.5b", text_dim=1536)
    with pytest.raises(StoreMismatch) as info:
        migrate(db, other)
    message = str(info.value)
    assert "all-MiniLM-L6-v2 (384-d)" in message and "gte-qwen2-1.5b (1536-d)" in message
    assert "Nothing was changed" in message
    with db.connection() as conn:
        assert conn.execute("SELECT path FROM sources").fetchall() == [("/keep.wav",)]
    renamed = dataclasses.replace(TEST_SPEC, voice_model="ecapa")  # same size, other model
    with pytest.raises(StoreMismatch, match="voice embeddings were made by campplus"):
        migrate(db, renamed)


def test_status_reports_version_counts_and_no_password(db: Database) -> None:
    register_sources(db, [FileEntry("/one.wav", 1, "h1"), FileEntry("/two.wav", 1, "h2")])
    status = store_status(db)
    assert status.schema_version == status.latest_version == len(available_migrations())
    assert status.row_counts["sources"] == 2
    assert status.row_counts["segments"] == 0
    assert status.vectors == TEST_SPEC


def undo_source_audio_note(conn: psycopg.Connection) -> None:
    """Take a store back from version 7 to version 6, as such a store was left."""
    conn.execute("ALTER TABLE sources DROP COLUMN audio_note")
    conn.execute("DELETE FROM schema_migrations WHERE version > 6")


def undo_source_diarization(conn: psycopg.Connection) -> None:
    """Take a store back from version 6 to version 5, as such a store was left."""
    undo_source_audio_note(conn)
    conn.execute("ALTER TABLE sources DROP COLUMN diarization")
    conn.execute("DELETE FROM schema_migrations WHERE version > 5")


def undo_voices_across_files(conn: psycopg.Connection) -> None:
    """Take a store back from version 5 to version 4, as such a store was left."""
    undo_source_diarization(conn)
    conn.execute("DROP TABLE source_speakers")
    conn.execute("DROP TABLE voices")
    conn.execute("DROP INDEX speakers_voice_hnsw")
    for column in ("speech_s", "enrolled_from", "updated_at"):
        conn.execute(f"ALTER TABLE speakers DROP COLUMN {column}")
    conn.execute("DELETE FROM schema_migrations WHERE version > 4")


def undo_segment_words(conn: psycopg.Connection) -> None:
    """Take a store back from version 4 to version 3, as such a store was left."""
    undo_voices_across_files(conn)
    conn.execute("ALTER TABLE segments DROP COLUMN words")
    conn.execute("DELETE FROM schema_migrations WHERE version > 3")


def undo_batch_states(conn: psycopg.Connection) -> None:
    """Take a store back from the latest version to version 2, as such a store was left."""
    undo_segment_words(conn)
    conn.execute("DROP VIEW batch_status")
    conn.execute("DROP FUNCTION batch_state")
    conn.execute("ALTER TABLE batches DROP COLUMN owner")
    conn.execute("ALTER TABLE jobs DROP CONSTRAINT jobs_state_check")
    conn.execute(
        "ALTER TABLE jobs ADD CONSTRAINT jobs_state_check"
        " CHECK (state IN ('queued', 'claimed', 'done', 'failed', 'skipped'))"
    )
    conn.execute("DELETE FROM schema_migrations WHERE version > 2")


def test_a_version_1_store_reports_status_and_upgrades_with_its_data(db: Database) -> None:
    """A store made before speaker turns were kept: `db status` still works, and migrating adds the
    table without touching what is stored."""
    register_sources(db, [FileEntry("/old.wav", 1, "h")])
    with db.connection() as conn:  # back to version 1, as such a store was left
        undo_batch_states(conn)
        conn.execute("DROP TABLE speaker_turns")
        conn.execute("DELETE FROM schema_migrations WHERE version > 1")
    status = store_status(db)
    assert (status.schema_version, status.latest_version) == (1, len(available_migrations()))
    assert "speaker_turns" not in status.row_counts and status.row_counts["sources"] == 1
    assert [m.name for m in migrate(db, TEST_SPEC)] == [m.name for m in available_migrations()[1:]]
    status = store_status(db)
    assert status.schema_version == status.latest_version
    assert status.row_counts["speaker_turns"] == 0 and status.row_counts["sources"] == 1


def test_a_version_2_store_gets_batch_states_and_its_cancelled_leftovers_closed(db: Database) -> None:
    """A store of version 2 (batch states running/paused/cancelled only): migrating keeps every batch
    and file, cancels the files a cancelled batch left queued, and shows finished batches as done or
    failed instead of running."""
    finished = create_batch(db, "finished")
    enqueue(db, finished, register_sources(db, [FileEntry("/f/one.wav", 1, "f1")]))
    broken = create_batch(db, "broken")
    enqueue(db, broken, register_sources(db, [FileEntry("/b/one.wav", 1, "b1")]))
    stopped = create_batch(db, "stopped")
    enqueue(db, stopped, register_sources(db, [FileEntry("/s/one.wav", 1, "s1")]))
    waiting = create_batch(db, "waiting")
    enqueue(db, waiting, register_sources(db, [FileEntry("/w/one.wav", 1, "w1")]))
    with db.connection() as conn:
        undo_batch_states(conn)
        conn.execute("UPDATE jobs SET state = 'done' WHERE batch_id = %s", (finished,))
        conn.execute("UPDATE jobs SET state = 'failed' WHERE batch_id = %s", (broken,))
        conn.execute("UPDATE batches SET state = 'cancelled' WHERE id = %s", (stopped,))
    assert store_status(db).schema_version == 2
    assert [m.name for m in migrate(db, TEST_SPEC)] == [m.name for m in available_migrations()[2:]]
    states = {b.name: (b.state, b.queued, b.cancelled) for b in batch_progress(db)}
    assert states == {
        "finished": ("done", 0, 0),
        "broken": ("failed", 0, 0),
        "stopped": ("cancelled", 0, 1),
        "waiting": ("running", 1, 0),
    }
    assert store_status(db).batches_by_state == {"done": 1, "failed": 1, "cancelled": 1, "running": 1}


def test_a_version_3_store_keeps_its_segments_without_words(db: Database) -> None:
    from test_storage_segments import MODELS, OUTCOME, make_segments

    from voxdock.storage.segments import replace_segments

    with db.connection() as conn:
        undo_segment_words(conn)
    source = register_sources(db, [FileEntry("/old.wav", 1, "h")])[0]
    with db.connection() as conn:  # a segment as version 3 wrote it
        conn.execute(
            "INSERT INTO segments (source_id, seq, start_s, end_s, text) VALUES (%s, 0, 0, 1, 'old')",
            (source,),
        )
    assert [m.name for m in migrate(db, TEST_SPEC)] == [m.name for m in available_migrations()[3:]]
    with db.connection() as conn:
        assert conn.execute("SELECT text, words FROM segments").fetchall() == [("old", None)]
    assert replace_segments(db, source, make_segments(2, seed=1), MODELS, OUTCOME) == 2


def test_a_version_5_store_keeps_its_sources_and_learns_how_speakers_are_found(db: Database) -> None:
    """Sources stored before version 6 say nothing of how their speakers were found (NULL, and
    `voxdock show` prints no such line); a file processed after the upgrade says it."""
    from test_storage_segments import MODELS, OUTCOME, make_segments

    from voxdock.storage.segments import replace_segments
    from voxdock.storage.sources import find_sources

    with db.connection() as conn:
        undo_source_diarization(conn)
    old, new = register_sources(db, [FileEntry("/old.wav", 1, "o"), FileEntry("/new.wav", 1, "n")])
    with db.connection() as conn:  # a source as version 5 left it, done
        conn.execute("UPDATE sources SET status = 'done', speaker_count = 2 WHERE id = %s", (old,))
    assert [m.name for m in migrate(db, TEST_SPEC)] == ["source_diarization", "source_audio_note"]
    (before,) = find_sources(db, "/old.wav")
    assert (before.status, before.diarization) == ("done", None)
    outcome = dataclasses.replace(OUTCOME, diarization="diarized by channel (one party per channel)")
    assert replace_segments(db, new, make_segments(2, seed=1), MODELS, outcome) == 2
    (after,) = find_sources(db, "/new.wav")
    assert after.diarization == "diarized by channel (one party per channel)"


def test_a_version_6_store_keeps_its_sources_and_learns_how_their_audio_was_heard(db: Database) -> None:
    """Sources stored before version 7 carry no note on their audio (NULL: `voxdock show` prints no
    such line); a file processed after the upgrade keeps the decoder's."""
    from test_storage_segments import MODELS, OUTCOME, make_segments

    from voxdock.storage.segments import replace_segments
    from voxdock.storage.sources import find_sources

    with db.connection() as conn:
        undo_source_audio_note(conn)
    old, new = register_sources(db, [FileEntry("/old.mkv", 1, "o"), FileEntry("/new.mkv", 1, "n")])
    with db.connection() as conn:  # a source as version 6 left it, done
        conn.execute("UPDATE sources SET status = 'done', diarization = 'diarized' WHERE id = %s", (old,))
    assert [m.name for m in migrate(db, TEST_SPEC)] == ["source_audio_note"]
    (before,) = find_sources(db, "/old.mkv")
    assert (before.status, before.diarization, before.audio_note) == ("done", "diarized", None)
    note = "its 2 audio streams heard together as tracks of one recording"
    outcome = dataclasses.replace(OUTCOME, audio_note=note)
    assert replace_segments(db, new, make_segments(2, seed=1), MODELS, outcome) == 2
    (after,) = find_sources(db, "/new.mkv")
    assert after.audio_note == note
    assert replace_segments(db, new, make_segments(2, seed=2), MODELS, OUTCOME) == 2
    assert find_sources(db, "/new.mkv")[0].audio_note is None  # a run with nothing to say clears it
