"""Transcripts out: subtitles (SRT, WebVTT), plain text, JSON, JSON lines, RTTM and TSV.

Every format is written from what the store holds (storage/transcripts.py), speakers under their
enrolled names where known. Subtitles follow the usual rules of the trade so players and editors take
them as they are: cues of at most two lines of 42 characters and 7 seconds, cut at word times when the
words are stored, and never overlapping in time within the one track.
"""

from __future__ import annotations

import html
import json
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from voxdock.storage.transcripts import Transcript, TranscriptSegment

ExportFormat = Literal["srt", "vtt", "txt", "json", "jsonl", "rttm", "tsv"]
FORMATS: tuple[ExportFormat, ...] = ("srt", "vtt", "txt", "json", "jsonl", "rttm", "tsv")
# Formats whose records each name their source, so several sources can share one stream.
LINE_FORMATS: tuple[ExportFormat, ...] = ("jsonl", "rttm")

LINE_CHARS = 42  # the common broadcast limit; also what fits a phone held upright
CUE_LINES = 2
CUE_MAX_S = 7.0


@dataclass
class Cue:
    start_ms: int
    end_ms: int
    speaker: str | None  # the name shown: enrolled name, else the file's label
    text: str


def export_names(paths: Sequence[str]) -> dict[str, str]:
    """A name per source for files written side by side (and RTTM file ids): the file's stem, or its
    whole path where two stems are alike; no whitespace, no slashes."""
    stems = [Path(p).stem for p in paths]
    names = {
        p: (stem if stems.count(stem) == 1 else p.strip("/")) for p, stem in zip(paths, stems, strict=True)
    }
    return {p: "_".join(name.replace("/", "_").split()) for p, name in names.items()}


# ---- subtitles ------------------------------------------------------------------------------------


def _fits(prefix: str, text: str) -> bool:
    return len(textwrap.wrap(prefix + text, LINE_CHARS)) <= CUE_LINES


def _token_times(segment: TranscriptSegment, tokens: list[str]) -> list[tuple[float, float]]:
    """Start and end of each whitespace token of the segment's text: the stored word times when the
    words line up with the tokens, else the segment's span shared out by characters."""
    if len(segment.words) == len(tokens):
        return [(w.start_s, w.end_s) for w in segment.words]
    total = sum(len(t) + 1 for t in tokens)
    span = segment.end_s - segment.start_s
    times, done = [], 0
    for token in tokens:
        start = segment.start_s + span * done / total
        done += len(token) + 1
        times.append((start, segment.start_s + span * done / total))
    return times


def segment_cues(segment: TranscriptSegment, *, prefix: str = "") -> list[Cue]:
    """The segment cut into cues that fit two lines (with `prefix`, e.g. a speaker tag, on the first)
    and CUE_MAX_S seconds, at word boundaries."""
    tokens = segment.text.split()
    if not tokens:
        return []
    times = _token_times(segment, tokens)
    cues: list[Cue] = []
    first = 0
    for i in range(1, len(tokens) + 1):
        if i < len(tokens):
            text = " ".join(tokens[first : i + 1])
            if _fits(prefix, text) and times[i][1] - times[first][0] <= CUE_MAX_S:
                continue
        start = segment.start_s if first == 0 else times[first][0]
        end = segment.end_s if i == len(tokens) else times[i - 1][1]
        cues.append(Cue(round(start * 1000), round(end * 1000), segment.who, " ".join(tokens[first:i])))
        first = i
    return cues


def subtitle_cues(transcript: Transcript, *, prefix: Callable[[str | None], str] = lambda _: "") -> list[Cue]:
    """Cues of the whole transcript in time order, none overlapping another: a cue starts no earlier
    than the one before ends, and one left with no time of its own joins the one before."""
    cues: list[Cue] = []
    for segment in sorted(transcript.segments, key=lambda s: (s.start_s, s.end_s)):
        for cue in segment_cues(segment, prefix=prefix(segment.who)):
            if cues and cue.start_ms < cues[-1].end_ms:
                cue.start_ms = cues[-1].end_ms
            if cues and cue.end_ms <= cue.start_ms:
                cues[-1].text += " " + cue.text
                continue
            cues.append(cue)
    return cues


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def to_srt(transcript: Transcript) -> str:
    def tag(who: str | None) -> str:
        return f"[{who}] " if who else ""

    blocks = []
    for number, cue in enumerate(subtitle_cues(transcript, prefix=tag), start=1):
        lines = textwrap.wrap(tag(cue.speaker) + cue.text, LINE_CHARS)
        times = f"{_clock(cue.start_ms, ',')} --> {_clock(cue.end_ms, ',')}"
        blocks.append(f"{number}\n{times}\n" + "\n".join(lines) + "\n")
    return "\n".join(blocks)


def _voice(who: str | None) -> str:
    # A voice annotation ends at '>' and cannot hold a line break.
    return " ".join("".join(c for c in who if c not in "<>&").split()) if who else ""


def to_vtt(transcript: Transcript) -> str:
    blocks = ["WEBVTT\n"]
    for cue in subtitle_cues(transcript):
        lines = [html.escape(line, quote=False) for line in textwrap.wrap(cue.text, LINE_CHARS)]
        voice = _voice(cue.speaker)
        if voice:
            lines[0] = f"<v {voice}>{lines[0]}"
        blocks.append(
            f"{_clock(cue.start_ms, '.')} --> {_clock(cue.end_ms, '.')}\n" + "\n".join(lines) + "\n"
        )
    return "\n".join(blocks)


# ---- text and data --------------------------------------------------------------------------------


def _hms(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def to_txt(transcript: Transcript) -> str:
    """One paragraph per turn of talk: consecutive segments of one speaker joined, led by the time it
    starts and who speaks."""
    paragraphs: list[tuple[float, str | None, list[str]]] = []
    for segment in transcript.segments:
        if paragraphs and paragraphs[-1][1] == segment.who:
            paragraphs[-1][2].append(segment.text)
        else:
            paragraphs.append((segment.start_s, segment.who, [segment.text]))
    lines = [
        f"[{_hms(start)}] " + (f"{who}: " if who else "") + " ".join(texts)
        for start, who, texts in paragraphs
    ]
    return "\n\n".join(lines) + ("\n" if lines else "")


def _segment_record(segment: TranscriptSegment) -> dict[str, object]:
    return {
        "start": round(segment.start_s, 3),
        "end": round(segment.end_s, 3),
        "text": segment.text,
        "speaker": segment.speaker,
        "speaker_name": segment.speaker_name,
        "words": [
            {"start": w.start_s, "end": w.end_s, "word": w.word, "probability": w.probability}
            for w in segment.words
        ],
    }


def transcript_record(transcript: Transcript) -> dict[str, object]:
    speech: dict[str, float] = {}
    for turn in transcript.turns:
        if not turn.overlapped:
            speech[turn.speaker] = speech.get(turn.speaker, 0.0) + turn.end_s - turn.start_s
    for segment in transcript.segments:  # speakers with words but no turns (files stored before turns)
        if segment.speaker and segment.speaker not in speech:
            speech[segment.speaker] = 0.0
    names = transcript.speaker_names()
    return {
        "source": transcript.path,
        "status": transcript.source.status,
        "duration_s": transcript.source.duration_s,
        "diarization": transcript.source.diarization,  # how the speakers were found
        "audio": transcript.source.audio_note,  # which audio streams were heard, and how
        "speakers": [
            {"label": label, "name": names.get(label), "speech_s": round(seconds, 3)}
            for label, seconds in sorted(speech.items())
        ],
        "segments": [_segment_record(s) for s in transcript.segments],
        "turns": [
            {
                "start": round(t.start_s, 3),
                "end": round(t.end_s, 3),
                "speaker": t.speaker,
                "overlapped": t.overlapped,
            }
            for t in transcript.turns
        ],
    }


def to_json(transcript: Transcript) -> str:
    return json.dumps(transcript_record(transcript), ensure_ascii=False, indent=2) + "\n"


def to_jsonl(transcript: Transcript) -> str:
    return "".join(
        json.dumps({"source": transcript.path, **_segment_record(s)}, ensure_ascii=False) + "\n"
        for s in transcript.segments
    )


def _one_word(text: str) -> str:
    return "_".join(text.split())


def to_rttm(transcript: Transcript, file_id: str) -> str:
    """Speaker turns (overlapped ones too), each speaker under its enrolled name where known."""
    names = transcript.speaker_names()
    return "".join(
        f"SPEAKER {file_id} 1 {t.start_s:.3f} {t.end_s - t.start_s:.3f} <NA> <NA>"
        f" {_one_word(names.get(t.speaker, t.speaker))} <NA> <NA>\n"
        for t in transcript.turns
    )


def _cell(text: str | None) -> str:
    return " ".join((text or "").split())  # no tabs or line breaks inside a field


def to_tsv(transcript: Transcript) -> str:
    rows = ["start\tend\tspeaker\tspeaker_name\ttext"]
    rows += [
        f"{s.start_s:.3f}\t{s.end_s:.3f}\t{_cell(s.speaker)}\t{_cell(s.speaker_name)}\t{_cell(s.text)}"
        for s in transcript.segments
    ]
    return "\n".join(rows) + "\n"


def render(transcript: Transcript, fmt: ExportFormat, file_id: str) -> str:
    """The transcript in `fmt`; `file_id` names the source inside RTTM lines."""
    if fmt == "rttm":
        return to_rttm(transcript, file_id)
    writers: dict[str, Callable[[Transcript], str]] = {
        "srt": to_srt,
        "vtt": to_vtt,
        "txt": to_txt,
        "json": to_json,
        "jsonl": to_jsonl,
        "tsv": to_tsv,
    }
    return writers[fmt](transcript)
