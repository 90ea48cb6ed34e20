"""Who speaks in each segment: the speaker who talks most in it, and a segment that spans a speaker
change is split at the word boundary where the change happens."""

from __future__ import annotations

from collections.abc import Sequence

from voxdock.engine.diarization import SINGLE_SPEAKER, SpeakerTurn
from voxdock.engine.segmenting import make_segment
from voxdock.engine.work import Segment, Word

__all__ = ["SINGLE_SPEAKER", "assign_speakers"]

# A run of words shorter than this, given to another speaker than its neighbours, is diarization
# jitter; at a segment's edge, unless that speaker's turns cover every word of it almost fully.
JITTER_WORD_S = 0.6
CERTAIN_COVER = 0.8


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _talk_time(turns: Sequence[SpeakerTurn], start: float, end: float) -> dict[str, float]:
    talk: dict[str, float] = {}
    for t in turns:
        if t.end <= start or t.start >= end:
            continue
        talk[t.speaker] = talk.get(t.speaker, 0.0) + _overlap(start, end, t.start, t.end)
    return talk


def _word_speaker(word: Word, turns: Sequence[SpeakerTurn]) -> tuple[str, float]:
    """The speaker of a word and how much of the word their turns cover (0..1)."""
    end = max(word.end, word.start + 0.01)
    talk = _talk_time(turns, word.start, end)
    if talk:
        speaker, seconds = max(talk.items(), key=lambda kv: kv[1])
        return speaker, seconds / (end - word.start)
    mid = (word.start + word.end) / 2
    nearest = min(
        turns, key=lambda t: 0.0 if t.start <= mid <= t.end else min(abs(t.start - mid), abs(t.end - mid))
    )
    return nearest.speaker, 0.0


def _smooth(words: Sequence[Word], labels: list[str], cover: list[float]) -> list[str]:
    """Relabel runs too short to be a turn: inside another speaker's words always, at a segment's
    edge unless diarization covers them well. Turn edges jitter by a few hundred ms (1.5 s embedding
    windows), and a split must not follow that jitter."""
    while True:
        runs: list[tuple[int, int]] = []  # [start, end) index ranges of equal labels
        start = 0
        for i in range(1, len(labels) + 1):
            if i == len(labels) or labels[i] != labels[start]:
                runs.append((start, i))
                start = i
        if len(runs) < 2:
            return labels
        for r, (a, b) in enumerate(runs):
            if words[b - 1].end - words[a].start >= JITTER_WORD_S:
                continue
            neighbours = [runs[x] for x in (r - 1, r + 1) if 0 <= x < len(runs)]
            inside = len(neighbours) == 2 and labels[neighbours[0][0]] == labels[neighbours[1][0]]
            if not inside and min(cover[a:b]) >= CERTAIN_COVER:
                continue  # at a segment's edge, a well-covered short run is a real change
            na, _ = max(neighbours, key=lambda run: words[run[1] - 1].end - words[run[0]].start)
            labels[a:b] = [labels[na]] * (b - a)
            break
        else:
            return labels


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
        scored = [_word_speaker(w, turns) for w in seg.words]
        labels = _smooth(seg.words, [spk for spk, _ in scored], [cov for _, cov in scored])
        run_start = 0
        for i in range(1, len(labels) + 1):
            if i == len(labels) or labels[i] != labels[run_start]:
                piece = make_segment(seg.words[run_start:i])
                talk = _talk_time(turns, piece.start, piece.end)
                piece.speaker = max(talk.items(), key=lambda kv: kv[1])[0] if talk else labels[run_start]
                if piece.text:
                    out.append(piece)
                run_start = i
    return out
