"""Transcripts out: every export format parsed back with a real parser for it and compared with what
was given (here) or stored (in the end-to-end test, tests/test_cli_transcripts.py)."""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import re
from pathlib import Path

import pytest
import srt
import webvtt

from voxdock.evaluation import read_rttm
from voxdock.exports import CUE_LINES, CUE_MAX_S, LINE_CHARS, export_names, render, subtitle_cues
from voxdock.storage.sources import StoredSource
from voxdock.storage.transcripts import StoredWord, Transcript, TranscriptSegment
from voxdock.storage.turns import TurnRecord

SOURCE = StoredSource(
    id=1, path="/archive/day one/meeting.wav", status="done", segment_count=4, duration_s=60.0
)
LONG = (
    "so the plan for the quarter is to move the archive onto the new servers, check every file twice, "
    "and only then switch the search over to the new index, which should take about two weeks"
)


def timed_words(text: str, start: float, step: float) -> tuple[StoredWord, ...]:
    return tuple(
        StoredWord(start + i * step, start + i * step + step * 0.8, word, 0.9)
        for i, word in enumerate(text.split())
    )


def sample() -> Transcript:
    """A long segment with word times, one that starts before the previous ends, one without words,
    text and a name that need escaping in WebVTT, and one speaker with an enrolled name."""
    words = timed_words(LONG, 0.5, 0.5)
    segments = [
        TranscriptSegment(0.5, words[-1].end_s, LONG, "SPEAKER_00", "Zoë <chair> & co", words),
        TranscriptSegment(19.5, 21.0, "Yes, x < y & that's fine.", "SPEAKER_01", None, ()),
        TranscriptSegment(22.0, 30.0, "Right. " * 12, "SPEAKER_01", None, ()),
        TranscriptSegment(31.0, 31.4, "Okay.", None, None, timed_words("Okay.", 31.0, 0.4)),
    ]
    turns = [
        TurnRecord(0.4, 19.8, "SPEAKER_00"),
        TurnRecord(19.8, 30.2, "SPEAKER_01"),
        TurnRecord(19.4, 20.0, "SPEAKER_00", overlapped=True),
    ]
    return Transcript(SOURCE, segments, turns)


def spoken_words(transcript: Transcript) -> list[str]:
    return [w for s in transcript.segments for w in s.text.split()]


def check_cue_rules(times: list[tuple[float, float]], lines: list[list[str]]) -> None:
    assert all(end > start for start, end in times)
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(times)), "cues overlap"
    for cue_lines in lines:
        assert 1 <= len(cue_lines) <= CUE_LINES, cue_lines
        assert all(len(line) <= LINE_CHARS for line in cue_lines), cue_lines


def test_srt_parses_with_numbered_cues_that_follow_the_rules_and_carry_every_word() -> None:
    transcript = sample()
    text = render(transcript, "srt", "meeting")
    assert ",500 --> " in text  # milliseconds after a comma, as SRT has them
    subs = list(srt.parse(text, ignore_errors=False))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    times = [(s.start.total_seconds(), s.end.total_seconds()) for s in subs]
    check_cue_rules(times, [s.content.splitlines() for s in subs])
    assert len(subs) > len(transcript.segments)  # the long segment was cut at word times
    assert times[0][0] == 0.5 and times[-1][1] == 31.4
    # Cut where the words are: each cue of the long segment spans at most CUE_MAX_S.
    assert all(end - start <= CUE_MAX_S for start, end in times if end <= transcript.segments[0].end_s)
    words = []
    for sub in subs:
        content = " ".join(sub.content.split())
        for tag in ("[Zoë <chair> & co] ", "[SPEAKER_01] "):
            content = content.removeprefix(tag)
        words += content.split()
    assert words == spoken_words(transcript)
    assert subs[0].content.startswith("[Zoë <chair> & co] so the plan")
    assert subs[-1].content == "Okay."  # no speaker, no tag


def test_vtt_parses_with_voice_tags_and_escaped_text() -> None:
    transcript = sample()
    text = render(transcript, "vtt", "meeting")
    assert text.startswith("WEBVTT\n\n")
    captions = list(webvtt.from_string(text))
    times = [
        (c.start_in_seconds + int(c.start[-3:]) / 1000, c.end_in_seconds + int(c.end[-3:]) / 1000)
        for c in captions
    ]
    shown = [
        [html.unescape(re.sub("<[^>]*>", "", line)) for line in c.raw_text.splitlines()] for c in captions
    ]
    check_cue_rules(times, shown)
    assert [c.voice for c in captions[:3]] == ["Zoë chair co"] * 3  # what a voice tag can hold of it
    assert {c.voice for c in captions if c.start_in_seconds in range(19, 31)} == {"SPEAKER_01"}
    assert captions[-1].voice is None
    words = [w for c in captions for w in html.unescape(c.text).split()]
    assert words == spoken_words(transcript)
    assert "x &lt; y &amp; that's" in text


def test_cues_never_overlap_even_when_a_segment_lies_inside_the_one_before() -> None:
    inner = Transcript(
        SOURCE,
        [
            TranscriptSegment(1.0, 5.0, "a long first remark", "SPEAKER_00"),
            TranscriptSegment(2.0, 3.0, "inside", "SPEAKER_01"),
            TranscriptSegment(4.9, 6.0, "after", "SPEAKER_01"),
        ],
    )
    cues = subtitle_cues(inner)
    assert [(c.start_ms, c.end_ms) for c in cues] == [(1000, 5000), (5000, 6000)]
    assert [c.text for c in cues] == ["a long first remark inside", "after"]


def test_json_and_jsonl_carry_segments_names_words_and_turns() -> None:
    transcript = sample()
    record = json.loads(render(transcript, "json", "meeting"))
    assert record["source"] == SOURCE.path and record["duration_s"] == 60.0
    assert record["speakers"] == [
        {"label": "SPEAKER_00", "name": "Zoë <chair> & co", "speech_s": 19.4},
        {"label": "SPEAKER_01", "name": None, "speech_s": 10.4},
    ]
    first = record["segments"][0]
    assert (first["start"], first["end"], first["speaker"], first["speaker_name"]) == (
        0.5,
        round(transcript.segments[0].end_s, 3),
        "SPEAKER_00",
        "Zoë <chair> & co",
    )
    assert [w["word"] for w in first["words"]] == LONG.split()
    assert first["words"][2] == {"start": 1.5, "end": 1.9, "word": "plan", "probability": 0.9}
    assert record["segments"][1]["words"] == []
    assert [t["overlapped"] for t in record["turns"]] == [False, False, True]
    lines = [json.loads(line) for line in render(transcript, "jsonl", "meeting").splitlines()]
    assert [(r["source"], r["text"]) for r in lines] == [(SOURCE.path, s.text) for s in transcript.segments]
    assert lines[0]["words"] == first["words"]


def test_tsv_reads_back_with_a_csv_reader(tmp_path: Path) -> None:
    transcript = sample()
    rows = list(csv.DictReader(io.StringIO(render(transcript, "tsv", "meeting")), delimiter="\t"))
    assert [
        (float(r["start"]), float(r["end"]), r["speaker"], r["speaker_name"], r["text"]) for r in rows
    ] == [
        (s.start_s, s.end_s, s.speaker or "", s.speaker_name or "", " ".join(s.text.split()))
        for s in transcript.segments
    ]


def test_rttm_and_txt(tmp_path: Path) -> None:
    transcript = sample()
    path = tmp_path / "meeting.rttm"
    path.write_text(render(transcript, "rttm", "meeting"))
    turns = read_rttm(path)
    assert [(t.start, t.speaker) for t in turns] == [
        (0.4, "Zoë_<chair>_&_co"),
        (19.8, "SPEAKER_01"),
        (19.4, "Zoë_<chair>_&_co"),
    ]
    assert all(line.split()[1] == "meeting" for line in path.read_text().splitlines())
    paragraphs = render(transcript, "txt", "meeting").split("\n\n")
    assert paragraphs[0].startswith("[00:00:00] Zoë <chair> & co: so the plan")
    assert paragraphs[1].startswith("[00:00:19] SPEAKER_01: Yes, x < y") and "Right. Right." in paragraphs[1]
    assert paragraphs[2] == "[00:00:31] Okay.\n"


@pytest.mark.parametrize("fmt", ["srt", "vtt", "txt", "json", "jsonl", "rttm", "tsv"])
def test_an_empty_transcript_is_still_valid(fmt: str) -> None:
    empty = Transcript(SOURCE, [], [])
    text = render(empty, fmt, "meeting")  # type: ignore[arg-type]
    if fmt == "vtt":
        assert list(webvtt.from_string(text)) == []
    elif fmt == "srt":
        assert list(srt.parse(text)) == []
    elif fmt == "json":
        assert json.loads(text)["segments"] == []


def test_export_names_are_stems_unless_two_are_alike() -> None:
    assert export_names(["/a/x.wav", "/b/y.wav"]) == {"/a/x.wav": "x", "/b/y.wav": "y"}
    assert export_names(["/a/x.wav", "/b/x.mp4", "/c/my talk.ogg"]) == {
        "/a/x.wav": "a_x.wav",
        "/b/x.mp4": "b_x.mp4",
        "/c/my talk.ogg": "my_talk",
    }
