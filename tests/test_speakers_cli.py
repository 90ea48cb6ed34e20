"""`voxdock speakers ...` as an operator types it (through the Typer app, on a real store): enroll,
list, rename, merge, forget, match, and one clear line for each bad request with nothing changed.
Enrolling from a clip runs the real CAM++ model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_speakers import counts, names, store_file
from typer.testing import CliRunner, Result

from voxdock import exit_codes
from voxdock.evaluation import write_wav
from voxdock.speakers_cli import speakers_app
from voxdock.storage.database import Database
from voxdock.storage.speakers import MATCH_THRESHOLD, list_voices

REAL = Path(__file__).parent / "fixtures" / "media" / "real"
SILENCE = Path(__file__).parent / "fixtures" / "media" / "silence.wav"


def speakers(url: str, tmp_path: Path, *args: str) -> Result:
    env = {"DATABASE_URL": url, "VOXDOCK_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    return CliRunner().invoke(speakers_app, list(args), env=env)


def refused(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("voxdock: "), result.stderr
    assert message in lines[0], lines[0]


def test_enroll_list_rename_merge_forget_and_match(db: Database, empty_db_url: str, tmp_path: Path) -> None:
    first = store_file(db, "/talks/1.wav", {"SPEAKER_00": "ann", "SPEAKER_01": "bob"}, seed=1)
    second = store_file(db, "/talks/2.wav", {"SPEAKER_00": "bob", "SPEAKER_01": "cid"}, seed=2)
    store_file(db, "/talks/3.wav", {"SPEAKER_00": "cid"}, seed=3)

    result = speakers(
        empty_db_url, tmp_path, "enroll", "Bob", "--from", "talks/1.wav", "--speaker", "SPEAKER_01"
    )
    assert result.exit_code == 0, result.output
    assert "enrolled Bob: print from 12 s of speech; named in 2 file(s), 24 s of speech" in result.stdout
    assert names(db, second) == {"SPEAKER_00": "Bob", "SPEAKER_01": None}

    listed = speakers(empty_db_url, tmp_path, "list")
    assert "Bob" in listed.stdout and "/talks/1.wav SPEAKER_01" in listed.stdout
    unknown = speakers(empty_db_url, tmp_path, "list", "--unknown")
    (cid,) = [v.id for v in list_voices(db, unknown_only=True, min_files=2)]
    assert f"voice #{cid}: in 2 file(s), 24 s (e.g. /talks/2.wav)" in unknown.stdout
    assert "1 more heard in fewer files" in unknown.stdout  # ann, in one file

    result = speakers(empty_db_url, tmp_path, "enroll", "Cid", "--voice", str(cid))
    assert result.exit_code == 0 and "named in 2 file(s)" in result.stdout
    assert names(db, second) == {"SPEAKER_00": "Bob", "SPEAKER_01": "Cid"}

    assert speakers(empty_db_url, tmp_path, "rename", "cid", "Cyd").exit_code == 0
    assert names(db, second)["SPEAKER_01"] == "Cyd"
    assert (
        speakers(
            empty_db_url, tmp_path, "enroll", "Bobby", "--from", "/talks/2.wav", "--speaker", "SPEAKER_00"
        ).exit_code
        == 0
    )
    merged = speakers(empty_db_url, tmp_path, "merge", "Bobby", "Bob")
    assert merged.exit_code == 0 and "merged Bobby into Bob: print from 24 s" in merged.stdout
    forgot = speakers(empty_db_url, tmp_path, "forget", "Bob")
    assert forgot.exit_code == 0 and "forgot Bob: 2 file(s) had the name" in forgot.stdout
    assert names(db, first) == {"SPEAKER_00": None, "SPEAKER_01": None}

    matched = speakers(empty_db_url, tmp_path, "match")
    assert matched.exit_code == 0 and "matched 3 file(s): enrolled speakers found 2 time(s)" in matched.stdout
    shown = speakers(empty_db_url, tmp_path, "file", "talks/2.wav")
    assert shown.exit_code == 0 and "Cyd" in shown.stdout and "SPEAKER_00" in shown.stdout


def test_each_bad_request_is_one_line_and_changes_nothing(
    db: Database, empty_db_url: str, tmp_path: Path
) -> None:
    store_file(db, "/talks/1.wav", {"SPEAKER_00": "ann", "SPEAKER_01": "bob"}, seed=1)
    store_file(db, "/talks/12.wav", {"SPEAKER_00": "ann"}, seed=2)
    assert speakers(empty_db_url, tmp_path, "enroll", "Ann", "--from", "/talks/12.wav").exit_code == 0
    before = counts(db)
    usage, incomplete = exit_codes.USAGE, exit_codes.INCOMPLETE
    cases = [
        (
            ("enroll", "Bob", "--from", "/talks/9.wav"),
            incomplete,
            "no file stored with a path containing '/talks/9.wav'",
        ),
        (("enroll", "Bob", "--from", "talks/1"), usage, "2 files match 'talks/1'"),
        (
            ("enroll", "Bob", "--from", "/talks/1.wav", "--speaker", "SPEAKER_05"),
            usage,
            "no speaker 'SPEAKER_05'",
        ),
        (
            ("enroll", "Bob", "--from", "/talks/1.wav", "--start", "300", "--end", "310"),
            usage,
            "no speech stored between 300 and 310 s",
        ),
        (
            ("enroll", "ann", "--from", "/talks/1.wav", "--speaker", "SPEAKER_01"),
            usage,
            "the name 'Ann' is taken",
        ),
        (("enroll", "Bob"), usage, "give one of --from FILE, --audio CLIP or --voice N"),
        (("enroll", "Bob", "--voice", "4", "--audio", "x.wav"), usage, "not --audio and --voice"),
        (("enroll", "Bob", "--audio", "/nope/clip.wav"), usage, "/nope/clip.wav: no such file or folder"),
        (("enroll", "Bob", "--voice", "999"), usage, "no voice #999"),
        (("enroll", "Bob", "--from", "/talks/1.wav", "--start", "3"), usage, "give both --start and --end"),
        (("rename", "Zed", "Bob"), usage, "no enrolled speaker named 'Zed'"),
        (("merge", "Ann", "ann"), usage, "are the same speaker"),
        (("forget", "Zed"), usage, "no enrolled speaker named 'Zed'"),
        (("match", "/elsewhere/"), incomplete, "no file stored"),
    ]
    for args, code, message in cases:
        refused(speakers(empty_db_url, tmp_path, *args), code, message)
    assert counts(db) == before


@pytest.mark.slow
@pytest.mark.models
def test_a_clip_enrolls_through_the_voice_model(db: Database, empty_db_url: str, tmp_path: Path) -> None:
    from voxdock.engine.decode import decode_file
    from voxdock.engine.enrollment import NoSpeech, clip_print
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.voice import VoiceEncoder

    encoder = VoiceEncoder(resolve_voice(Path("/nonexistent")).require(), "cpu")
    jfk = decode_file(REAL / "jfk.wav").samples
    half = jfk.shape[0] // 2
    early = clip_print(write_wav(tmp_path / "jfk_a.wav", jfk[:half]), encoder)
    late = clip_print(write_wav(tmp_path / "jfk_b.wav", jfk[half:]), encoder)
    other = clip_print(REAL / "sb_LJ050-0131.wav", encoder)
    assert 3.0 < early.speech_s < 6.0 and np.linalg.norm(early.vector) == pytest.approx(1.0, abs=1e-5)
    same, different = float(early.vector @ late.vector), float(early.vector @ other.vector)
    assert same >= MATCH_THRESHOLD > different, (same, different)
    with pytest.raises(NoSpeech):
        clip_print(SILENCE, encoder)

    # A stored file whose speaker is JFK (its segments carry the late half's print) gets the name.
    source = store_file(db, "/speeches/jfk.wav", {"SPEAKER_00": "ann"}, seed=1)
    with db.connection() as conn:
        conn.execute("UPDATE segments SET voice_embedding = %s WHERE source_id = %s", (late.vector, source))
    result = speakers(empty_db_url, tmp_path, "enroll", "JFK", "--audio", str(tmp_path / "jfk_a.wav"))
    assert result.exit_code == 0, result.output
    assert names(db, source) == {"SPEAKER_00": None}  # the store's centroids were made before the update
    assert speakers(empty_db_url, tmp_path, "match", "/speeches/jfk.wav").exit_code == 0
    assert names(db, source) == {"SPEAKER_00": "JFK"}
    refused(
        speakers(empty_db_url, tmp_path, "enroll", "Quiet", "--audio", str(SILENCE)),
        exit_codes.USAGE,
        "no speech found",
    )
