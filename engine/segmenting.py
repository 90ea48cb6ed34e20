"""From recognised words to stored segments.

Segments are sentence-sized: a new one starts after a sentence end, after a pause, or when one would
grow too long, so a search hit points at a sentence rather than a 30 s ASR chunk. Who speaks in each
is engine/speaker_assignment.py's job.
"""

from __future__ import annotations

from collections.abc import Sequence

from voxdock.engine.work import Segment, Word

PAUSE_S = 0.8  # a silence this long ends a segment
MAX_SEGMENT_S = 20.0
SENTENCE_END = (".", "?", "!", "…")


def words_to_segments(words: Sequence[Word]) -> list[Segment]:
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current:
            gap = word.start - current[-1].end
            ended = current[-1].text.strip().endswith(SENTENCE_END)
            too_long = word.end - current[0].start > MAX_SEGMENT_S
            if gap >= PAUSE_S or ended or too_long:
                segments.append(make_segment(current))
                current = []
        current.append(word)
    if current:
        segments.append(make_segment(current))
    return [s for s in segments if s.text]


def make_segment(words: list[Word], speaker: str | None = None) -> Segment:
    text = "".join(w.text for w in words).strip()
    return Segment(
        start=words[0].start, end=max(w.end for w in words), text=text, words=list(words), speaker=speaker
    )
