"""`voxdock show` and `voxdock export` as an operator runs them, on files the real engine stored: every
export format parsed back with a real parser and compared with the store, speaker names included."""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import srt
import webvtt
from conftest import one_line, run_voxdock, wait_for_batch
from test_engine import copy_media

from voxdock import exit_codes
from voxdock.engine.engine import Engine
from voxdock.evaluation import read_rttm
from voxdock.storage.database import Database
from voxdock.storage.sources import find_sources
from voxdock.storage.transcripts import Transcript, read_transcript

pytestmark = [pytest.mark.slow, pytest.mark.models]


def voxdock(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "VOXDOCK_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "120"}
    env["HF_HUB_OFFLINE"] = "1"
    return run_voxdock(tmp_path, *args, env=env)


def words_of(transcript: Transcript) -> list[str]:
    return [w for s in transcript.segments for w in s.text.split()]


def test_show_and_export_what_the_engine_stored(
    make_engine: Callable[..., Engine], db: Database, empty_db_url: str, tmp_path: Path
) -> None:
    dialogue, monologue = copy_media(tmp_path, "dialogue_2spk.wav", "monologue.ogg")
    engine = make_engine()
    submission = engine.submit([dialogue, monologue], batch_name="talks")
    engine.start()
    assert wait_for_batch(engine, submission.batch_id).done == 2
    engine.stop(mode="requeue", timeout=60)
    (source,) = find_sources(db, str(dialogue.resolve()))
    enrolled = voxdock(
        empty_db_url,
        tmp_path,
        "speakers",
        "enroll",
        "Alice Smith",
        "--from",
        str(dialogue),
        "--speaker",
        "SPEAKER_00",
    )
    assert enrolled.returncode == 0, enrolled.stderr
    stored = read_transcript(db, source)
    assert {s.speaker for s in stored.segments} == {"SPEAKER_00", "SPEAKER_01"}
    # The engine keeps faster-whisper's word times, inside their segment, in time order.
    for segment in stored.segments:
        assert [w.word for w in segment.words] == segment.text.split()
        assert segment.start_s <= segment.words[0].start_s and segment.words[-1].end_s <= segment.end_s + 1e-3
        assert all(b.start_s >= a.start_s for a, b in itertools.pairwise(segment.words))
    names = {s.speaker: s.who for s in stored.segments}
    assert names == {"SPEAKER_00": "Alice Smith", "SPEAKER_01": "SPEAKER_01"}

    # The decoder's note on a file's audio (here as it reads for a file of two tracks) goes with it.
    audio = "its 2 audio streams heard together as tracks of one recording"
    with db.connection() as conn:
        conn.execute("UPDATE sources SET audio_note = %s WHERE id = %s", (audio, source.id))
    # show: one row per segment, the enrolled name where known.
    shown = voxdock(empty_db_url, tmp_path, "show", "dialogue_2spk")
    assert shown.returncode == 0, shown.stderr
    assert "Alice Smith (SPEAKER_00), SPEAKER_01" in " ".join(shown.stdout.split())
    rows = [line for line in shown.stdout.splitlines() if re.match(r"\d+:\d\d\.\d ", line)]
    assert len(rows) == len(stored.segments)
    assert all(
        ("Alice Smith" in row) == (s.speaker == "SPEAKER_00")
        for row, s in zip(rows, stored.segments, strict=True)
    )
    # How the speakers were found: diarized here; the monologue went by the fast path, and the
    # operator is told its similarity and the command that diarizes it anyway.
    assert "how found: diarized" in " ".join(shown.stdout.split()), shown.stdout
    assert f"audio: {audio}" in " ".join(shown.stdout.split()), shown.stdout
    turns = voxdock(empty_db_url, tmp_path, "turns", "dialogue_2spk")
    assert f"audio: {audio}" in " ".join(turns.stdout.split()), turns.stdout
    mono_shown = voxdock(empty_db_url, tmp_path, "show", "monologue")
    assert mono_shown.returncode == 0, mono_shown.stderr
    said_how = " ".join(mono_shown.stdout.split())
    assert "audio:" not in said_how
    assert re.search(r"how found: monologue fast path: one voice \(similarity 0\.9\d\d >= 0\.950\)", said_how)
    assert f"voxdock ingest --no-skip-existing --min-speakers 2 {monologue.resolve()}" in said_how

    # search --speaker: only what the enrolled speaker said, shown under the name.
    said = voxdock(
        empty_db_url, tmp_path, "search", "the park on Saturday", "--speaker", "alice smith", "-n", "50"
    )
    assert said.returncode == 0, said.stderr
    alice = [s for s in stored.segments if s.speaker == "SPEAKER_00"]
    rows = [line for line in said.stdout.splitlines() if ".wav" in line or ".ogg" in line]
    assert rows and all("Alice Smith" in row for row in rows), said.stdout
    assert sum("dialogue_2spk" in row for row in rows) == len(alice) > 0, said.stdout
    assert "SPEAKER_01" not in said.stdout
    nobody = voxdock(empty_db_url, tmp_path, "search", "the park", "--speaker", "Bob")
    assert nobody.returncode == exit_codes.USAGE and "no enrolled speaker named 'Bob'" in one_line(nobody)

    out = tmp_path / "exports"
    for fmt in ("srt", "vtt", "json", "tsv", "rttm", "txt"):
        result = voxdock(
            empty_db_url, tmp_path, "export", "--batch", "talks", "--format", fmt, "--out", str(out)
        )
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}.{fmt}"
        for stem in ("dialogue_2spk", "monologue")
        for fmt in ("srt", "vtt", "json", "tsv", "rttm", "txt")
    )

    subs = list(srt.parse((out / "dialogue_2spk.srt").read_text(), ignore_errors=False))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    assert all(b.start >= a.end for a, b in itertools.pairwise(subs))
    srt_words = []
    for sub in subs:
        speaker, _, said = " ".join(sub.content.split()).partition("] ")
        assert speaker in ("[Alice Smith", "[SPEAKER_01")
        srt_words += said.split()
    assert srt_words == words_of(stored)

    captions = list(webvtt.read(str(out / "dialogue_2spk.vtt")))
    assert {c.voice for c in captions} == {"Alice Smith", "SPEAKER_01"}
    assert [w for c in captions for w in html.unescape(c.text).split()] == words_of(stored)

    record = json.loads((out / "dialogue_2spk.json").read_text())
    assert [(s["start"], s["text"], s["speaker"], s["speaker_name"]) for s in record["segments"]] == [
        (round(s.start_s, 3), s.text, s.speaker, s.speaker_name) for s in stored.segments
    ]
    assert [[w["word"] for w in s["words"]] for s in record["segments"]] == [
        s.text.split() for s in stored.segments
    ]
    assert record["diarization"] == "diarized"
    assert record["audio"] == audio
    assert json.loads((out / "monologue.json").read_text())["audio"] is None
    assert json.loads((out / "monologue.json").read_text())["diarization"].startswith("monologue fast path")
    assert {s["label"]: s["name"] for s in record["speakers"]} == {
        "SPEAKER_00": "Alice Smith",
        "SPEAKER_01": None,
    }

    table = list(csv.DictReader(io.StringIO((out / "monologue.tsv").read_text()), delimiter="\t"))
    (mono,) = find_sources(db, str(monologue.resolve()))
    assert [r["text"] for r in table] == [s.text for s in read_transcript(db, mono).segments]

    turns = read_rttm(out / "dialogue_2spk.rttm")
    assert {t.speaker for t in turns} == {"Alice_Smith", "SPEAKER_01"}
    assert len(turns) == len(stored.turns)
    assert (out / "dialogue_2spk.txt").read_text().startswith("[00:00:0")

    # One source to standard output; several only in line formats.
    single = voxdock(empty_db_url, tmp_path, "export", str(dialogue), "--format", "vtt")
    assert single.returncode == 0 and single.stdout == (out / "dialogue_2spk.vtt").read_text()
    lines = voxdock(empty_db_url, tmp_path, "export", "--batch", "talks", "--format", "jsonl")
    assert lines.returncode == 0
    assert {json.loads(line)["source"] for line in lines.stdout.splitlines()} == {
        str(dialogue.resolve()),
        str(monologue.resolve()),
    }

    # Bad input: one clear line each, nothing written.
    before = sorted(out.iterdir())
    for args, status, message in [
        (
            ("export", "--batch", "talks", "--format", "srt"),
            exit_codes.USAGE,
            "2 files to export as srt: give --out",
        ),
        (("export", "--batch", "talks", "--format", "doc"), exit_codes.USAGE, "unknown format 'doc'"),
        (("export", "--batch", "nope", "--format", "srt"), exit_codes.USAGE, "no batch named 'nope'"),
        (
            ("export", "gone.wav", "--format", "srt"),
            exit_codes.INCOMPLETE,
            "no file stored with a path containing",
        ),
        (("export", "--format", "srt"), exit_codes.USAGE, "nothing to export"),
        (("show", "no-such"), exit_codes.INCOMPLETE, "no file stored with a path containing 'no-such'"),
        (("show", str(tmp_path)), exit_codes.USAGE, "2 files match"),
    ]:
        result = voxdock(empty_db_url, tmp_path, *args)
        assert result.returncode == status, (args, result.stderr)
        assert message in one_line(result), (args, result.stderr)
    assert sorted(out.iterdir()) == before
