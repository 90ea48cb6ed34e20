"""From recognised words to stored segments, and who speaks in each.

Segments are sentence-sized: a new one starts after a sentence end, after a pause, or when one would
grow too long, so a search hit points at a sentence rather than a 30 s ASR chunk. Then each segment
gets the speaker who talks most in it, and a segment that spans a speaker change is split at the word
boundary where the change happens.
"""

from __future__ import annotations

from collections.abc import Sequence

from voxdock.engine.diarization import SpeakerTurn
from voxdock.engine.work import Segment, Word

PAUSE_S = 0.8  # a silence this long ends a segment
MAX_SEGMENT_S = 20.0
SENTENCE_END = (".", "?", "!", "…")
SINGLE_SPEAKER = "SPEAKER_00"
# A lone word whose speaker differs from both neighbours (who agree) is diarization jitter if shorter.
JITTER_WORD_S = 0.6


def words_to_segments(words: Sequence[Word]) -> list[Segment]:
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current:
            gap = word.start - current[-1].end
            ended = current[-1].text.strip().endswith(SENTENCE_END)
            too_long = word.end - current[0].start > MAX_SEGMENT_S
            if gap >= PAUSE_S or ended or too_long:
                segments.append(_segment(current))
                current = []
        current.append(word)
    if current:
        segments.append(_segment(current))
    return [s for s in segments if s.text]


def _segment(words: list[Word], speaker: str | None = None) -> Segment:
    text = "".join(w.text for w in words).strip()
    return Segment(
        start=words[0].start, end=max(w.end for w in words), text=text, words=list(words), speaker=speaker
    )


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _talk_time(turns: Sequence[SpeakerTurn], start: float, end: float) -> dict[str, float]:
    talk: dict[str, float] = {}
    for t in turns:
        if t.end <= start or t.start >= end:
            continue
        talk[t.speaker] = talk.get(t.speaker, 0.0) + _overlap(start, end, t.start, t.end)
    return talk


def _word_speaker(word: Word, turns: Sequence[SpeakerTurn]) -> str:
    talk = _talk_time(turns, word.start, max(word.end, word.start + 0.01))
    if talk:
        return max(talk.items(), key=lambda kv: kv[1])[0]
    mid = (word.start + word.end) / 2
    nearest = min(
        turns, key=lambda t: 0.0 if t.start <= mid <= t.end else min(abs(t.start - mid), abs(t.end - mid))
    )
    return nearest.speaker


def assign_speakers(segments: Sequence[Segment], turns: Sequence[SpeakerTurn] | None) -> list[Segment]:
    """Label segments with speakers from diarization turns (None: one speaker, the fast path)."""
    if not turns:
        for s in segments:
            s.speaker = SINGLE_SPEAKER
        return list(segments)
    out: list[Segment] = []
    for seg in segments:
        if not seg.words:
            talk = _talk_time(turns, seg.start, seg.end)
            seg.speaker = max(talk.items(), key=lambda kv: kv[1])[0] if talk else None
            out.append(seg)
            continue
        labels = [_word_speaker(w, turns) for w in seg.words]
        for i in range(1, len(labels) - 1):
            w = seg.words[i]
            if labels[i - 1] == labels[i + 1] != labels[i] and w.end - w.start < JITTER_WORD_S:
                labels[i] = labels[i - 1]
        run_start = 0
        for i in range(1, len(labels) + 1):
            if i == len(labels) or labels[i] != labels[run_start]:
                piece = _segment(seg.words[run_start:i])
                talk = _talk_time(turns, piece.start, piece.end)
                piece.speaker = max(talk.items(), key=lambda kv: kv[1])[0] if talk else labels[run_start]
                if piece.text:
                    out.append(piece)
                run_start = i
    return out
