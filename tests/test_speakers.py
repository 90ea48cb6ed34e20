"""Speakers known across files (storage/speakers.py): enrolling prints, matching each stored file's
speakers to them, grouping unknown voices, relabelling on enroll/rename/merge/forget, search by name.

Voices here are random directions in the 192-d voice space (nearly orthogonal to each other); a
speaker's segments are its direction plus noise, so their centroid sits near it (cosine ~0.9) and far
from every other voice (~0). The real model's figures are bench/speaker_matching.py's.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TEST_SPEC
from test_storage_migrate import undo_voices_across_files

from voxdock.storage.database import Database
from voxdock.storage.jobs import FileEntry, batch_jobs, create_batch, enqueue, register_sources
from voxdock.storage.migrate import migrate
from voxdock.storage.search import search_text
from voxdock.storage.segments import ModelSet, SegmentRecord, SourceOutcome, replace_segments
from voxdock.storage.speakers import (
    SpeakerError,
    enroll_from_source,
    enroll_print,
    enroll_voice,
    file_speakers,
    find_speaker,
    forget_speaker,
    list_speakers,
    list_voices,
    match_store,
    merge_speakers,
    rename_speaker,
)

MODELS = ModelSet(
    asr="tiny.en", diarizer="test", voice="campplus-sv-zh-en-16k", text_model="all-MiniLM-L6-v2"
)
OUTCOME = SourceOutcome(duration_s=60.0, content_hash=None, speaker_count=2, fast_path=False, node_id=None)
RNG = np.random.default_rng(7)
VOICES = {name: RNG.standard_normal(192).astype(np.float32) for name in ("ann", "bob", "cid", "dee")}


def voice_of(who: str, rng: np.random.Generator) -> np.ndarray:
    base = VOICES[who] / np.linalg.norm(VOICES[who])
    return (base + 0.02 * rng.standard_normal(192)).astype(np.float32)


def store_file(db: Database, path: str, speakers: dict[str, str], seed: int = 0, text: str = "") -> int:
    """A stored file whose label -> voice are `speakers`: four 3 s segments per label, in turn."""
    source = register_sources(db, [FileEntry(path=path, size_bytes=1, content_hash=path)])[0]
    rng = np.random.default_rng(seed)
    segments = []
    t = 0.0
    for i in range(4):
        for label, who in speakers.items():
            segments.append(
                SegmentRecord(
                    start_s=t,
                    end_s=t + 3.0,
                    text=text or f"{who} says line {i}",
                    speaker=label,
                    text_embedding=rng.standard_normal(384).astype(np.float32),
                    voice_embedding=voice_of(who, rng),
                )
            )
            t += 3.5
    replace_segments(db, source, segments, MODELS, OUTCOME)
    return source


def names(db: Database, source: int) -> dict[str, str | None]:
    """label -> the name its segments carry through segments.speaker_id (what show/export read)."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT DISTINCT g.speaker, p.name FROM segments g LEFT JOIN speakers p ON p.id = g.speaker_id"
            " WHERE g.source_id = %s",
            (source,),
        ).fetchall()
    return dict(rows)


def counts(db: Database) -> tuple[int, int]:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM speakers),"
            " (SELECT count(*) FROM segments WHERE speaker_id IS NOT NULL)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_enrolling_one_file_names_the_voice_in_every_other_file_and_leaves_strangers_anonymous(
    db: Database,
) -> None:
    first = store_file(db, "/a/1.wav", {"SPEAKER_00": "ann", "SPEAKER_01": "bob"}, seed=1)
    second = store_file(db, "/a/2.wav", {"SPEAKER_00": "cid", "SPEAKER_01": "ann"}, seed=2)
    assert names(db, second) == {"SPEAKER_00": None, "SPEAKER_01": None}
    alice = enroll_from_source(db, "Alice", first, label="SPEAKER_00", described_as="/a/1.wav")
    assert (alice.speech_s, alice.files, alice.heard_s) == (12.0, 2, 24.0)
    assert names(db, first) == {"SPEAKER_00": "Alice", "SPEAKER_01": None}
    assert names(db, second) == {"SPEAKER_00": None, "SPEAKER_01": "Alice"}
    # A file stored afterwards is matched when it is written.
    third = store_file(db, "/a/3.wav", {"SPEAKER_00": "ann"}, seed=3)
    assert names(db, third) == {"SPEAKER_00": "Alice"}
    # The console's files view reads the names with the batch's files.
    batch = create_batch(db, "named")
    enqueue(db, batch, [first, second])
    enroll_from_source(db, "Bob", first, label="SPEAKER_01", described_as="/a/1.wav")
    assert {j.path: (j.speaker_count, list(j.speaker_names)) for j in batch_jobs(db, batch)} == {
        "/a/1.wav": (2, ["Alice", "Bob"]),
        "/a/2.wav": (2, ["Alice"]),
    }
    [one] = [s for s in file_speakers(db, second) if s.name]
    assert one.label == "SPEAKER_01" and one.similarity is not None and one.similarity > 0.9


def test_a_time_range_enrolls_the_speech_in_it_and_a_mixed_range_is_refused(db: Database) -> None:
    source = store_file(db, "/a/1.wav", {"SPEAKER_00": "ann", "SPEAKER_01": "bob"})
    # Segments: ann 0-3, bob 3.5-6.5, ann 7-10 ...: 0.5-2.5 s is ann's alone.
    bob_print = enroll_from_source(db, "Bob", source, start_s=3.6, end_s=6.0)
    assert bob_print.speech_s == pytest.approx(2.4)
    assert names(db, source) == {"SPEAKER_00": None, "SPEAKER_01": "Bob"}
    with pytest.raises(SpeakerError, match=r"holds 2 speakers .*--speaker"):
        enroll_from_source(db, "Ann", source, start_s=0, end_s=8)
    ann = enroll_from_source(db, "Ann", source, start_s=0, end_s=8, label="SPEAKER_00")
    assert ann.speech_s == pytest.approx(4.0)


def test_bad_enrollments_say_why_and_change_nothing(db: Database) -> None:
    source = store_file(db, "/a/1.wav", {"SPEAKER_00": "ann", "SPEAKER_01": "bob"})
    enroll_from_source(db, "Alice", source, label="SPEAKER_00")
    before = counts(db)
    cases = [
        ({"label": "SPEAKER_07"}, "no speaker 'SPEAKER_07': its speakers are SPEAKER_00, SPEAKER_01"),
        ({"start_s": 100.0, "end_s": 110.0}, "no speech stored between 100 and 110 s"),
        ({"start_s": 5.0, "end_s": 2.0}, "bad time range"),
        ({}, "holds 2 speakers"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SpeakerError, match=message):
            enroll_from_source(db, "Bob", source, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(SpeakerError, match="'Alice' is taken"):
        enroll_from_source(db, "alice", source, label="SPEAKER_01")
    with pytest.raises(SpeakerError, match="cannot be empty"):
        enroll_from_source(db, "  ", source, label="SPEAKER_01")
    with pytest.raises(SpeakerError, match="no speech"):
        enroll_print(db, "Bob", VOICES["bob"], 0.0, "/clip.wav")
    with pytest.raises(SpeakerError, match="192"):
        enroll_print(db, "Bob", np.ones(10, np.float32), 3.0, "/clip.wav")
    with pytest.raises(SpeakerError, match="no voice #999"):
        enroll_voice(db, "Bob", 999)
    assert counts(db) == before


def test_rename_merge_and_forget_keep_every_label_right(db: Database) -> None:
    first = store_file(db, "/a/1.wav", {"SPEAKER_00": "ann", "SPEAKER_01": "bob"}, seed=1)
    second = store_file(db, "/a/2.wav", {"SPEAKER_00": "bob"}, seed=2)
    enroll_from_source(db, "Ann", first, label="SPEAKER_00")
    enroll_from_source(db, "Robert", first, label="SPEAKER_01")
    enroll_print(db, "Bobby", voice_of("bob", np.random.default_rng(5)), 5.0, "/clip.wav")
    # Bob's two prints compete; each file gives one label one name, so Bob is one of them in each.
    assert names(db, second)["SPEAKER_00"] in ("Robert", "Bobby")
    with pytest.raises(SpeakerError, match="'Ann' is taken"):
        rename_speaker(db, "Robert", "ANN")
    renamed = rename_speaker(db, "robert", "Bob")
    assert renamed.name == "Bob" and find_speaker(db, "Robert") is None
    merged = merge_speakers(db, "Bobby", "Bob")
    assert merged.speech_s == pytest.approx(12.0 + 5.0) and "merged Bobby" in (merged.enrolled_from or "")
    assert [s.name for s in list_speakers(db)] == ["Ann", "Bob"]
    assert names(db, first) == {"SPEAKER_00": "Ann", "SPEAKER_01": "Bob"}
    assert names(db, second) == {"SPEAKER_00": "Bob"}
    assert forget_speaker(db, "Bob") == 2
    assert names(db, first) == {"SPEAKER_00": "Ann", "SPEAKER_01": None}
    assert names(db, second) == {"SPEAKER_00": None}
    with pytest.raises(SpeakerError, match="no enrolled speaker named 'Bob'"):
        forget_speaker(db, "Bob")


def test_unknown_voices_are_grouped_across_files_and_enrolling_one_names_it_everywhere(db: Database) -> None:
    files = [
        store_file(db, "/a/1.wav", {"SPEAKER_00": "cid", "SPEAKER_01": "dee"}, seed=1),
        store_file(db, "/a/2.wav", {"SPEAKER_00": "dee", "SPEAKER_01": "cid"}, seed=2),
        store_file(db, "/a/3.wav", {"SPEAKER_00": "cid"}, seed=3),
        store_file(db, "/a/4.wav", {"SPEAKER_00": "ann"}, seed=4),
    ]
    voices = list_voices(db, unknown_only=True, min_files=2)
    assert [(v.files, v.speech_s) for v in voices] == [(3, 36.0), (2, 24.0)]
    assert list_voices(db, min_files=1)[-1].files == 1  # ann, heard once
    cid = voices[0].id
    enroll_voice(db, "Cid", cid)
    assert [names(db, f) for f in files[:3]] == [
        {"SPEAKER_00": "Cid", "SPEAKER_01": None},
        {"SPEAKER_00": None, "SPEAKER_01": "Cid"},
        {"SPEAKER_00": "Cid"},
    ]
    assert [v.id for v in list_voices(db, unknown_only=True, min_files=2)] == [voices[1].id]
    # Matching the whole store again keeps the voice numbers and the names.
    assert match_store(db) == 4
    assert {v.id for v in list_voices(db)} == {v.id for v in list_voices(db)} and cid in {
        v.id for v in list_voices(db)
    }
    assert names(db, files[1]) == {"SPEAKER_00": None, "SPEAKER_01": "Cid"}


def test_reprocessing_a_file_relabels_it_and_moves_its_voices(db: Database) -> None:
    source = store_file(db, "/a/1.wav", {"SPEAKER_00": "ann"}, seed=1)
    enroll_from_source(db, "Ann", source)
    other = store_file(db, "/a/2.wav", {"SPEAKER_00": "bob"}, seed=2)
    assert names(db, other) == {"SPEAKER_00": None}
    # The same path processed again, now heard as Ann: named at once, its old voice (bob's) gone.
    with db.connection() as conn:
        conn.execute("DELETE FROM sources WHERE id = %s", (source,))
    again = store_file(db, "/a/2.wav", {"SPEAKER_00": "ann", "SPEAKER_01": "cid"}, seed=3)
    assert again == other
    assert names(db, other) == {"SPEAKER_00": "Ann", "SPEAKER_01": None}
    assert sorted(v.files for v in list_voices(db)) == [1, 1]


def test_search_can_keep_to_one_enrolled_speaker(db: Database) -> None:
    first = store_file(db, "/a/1.wav", {"SPEAKER_00": "ann", "SPEAKER_01": "bob"}, seed=1)
    enroll_from_source(db, "Bob", first, label="SPEAKER_01")
    bob = find_speaker(db, "bob")
    assert bob is not None
    query = np.random.default_rng(3).standard_normal(384).astype(np.float32)
    everyone = search_text(db, query, limit=20)
    only_bob = search_text(db, query, limit=20, speaker_id=bob.id)
    assert len(everyone) == 8 and len(only_bob) == 4
    assert {h.speaker_name for h in only_bob} == {"Bob"} and {h.speaker for h in only_bob} == {"SPEAKER_01"}
    assert {h.speaker_name for h in everyone} == {"Bob", None}


def test_a_version_4_store_gets_its_files_speakers_on_upgrade(db: Database) -> None:
    source = store_file(db, "/old/1.wav", {"SPEAKER_00": "ann", "SPEAKER_01": "bob"})
    with db.connection() as conn:
        undo_voices_across_files(conn)
    assert [m.name for m in migrate(db, TEST_SPEC)] == [
        "voices_across_files",
        "source_diarization",
        "source_audio_note",
    ]
    stored = file_speakers(db, source)
    assert [(s.label, s.segment_count, s.speech_s, s.voice_id) for s in stored] == [
        ("SPEAKER_00", 4, 12.0, None),
        ("SPEAKER_01", 4, 12.0, None),
    ]
    enroll_from_source(db, "Ann", source, label="SPEAKER_00")
    assert names(db, source) == {"SPEAKER_00": "Ann", "SPEAKER_01": None}
    assert match_store(db) == 1 and len(list_voices(db)) == 2  # voices come with matching
