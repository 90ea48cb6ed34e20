"""Who speaks when: speaker turns, the diarizer's result, and small operations on turns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# One speaker's turns closer than this are one turn: pauses inside a turn count as that speaker's
# speech, as reference annotations mark them.
BRIDGE_GAP_S = 1.0
SINGLE_SPEAKER = "SPEAKER_00"


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


@dataclass
class DiarizationResult:
    turns: list[SpeakerTurn]  # one speaker at a time: what each word is attributed by
    # Where two talk at once, the extra turns that give the stretch to both voices (`turns` gives it
    # to one). Empty when the diarizer does not mark overlapped speech.
    overlaps: list[SpeakerTurn] = field(default_factory=list)
    # Voice embeddings the diarizer computed (voice-model space), with their spans and speakers:
    # reused as the segments' voice embeddings instead of embedding the same speech again.
    windows: list[tuple[float, float]] = field(default_factory=list)
    window_embeddings: np.ndarray | None = None
    window_speakers: list[str] = field(default_factory=list)
    fast_path: bool = False  # decided to be one voice without diarizing the whole file
    fast_path_reason: str = ""
    fast_path_similarity: float | None = None
    # The source held one party per channel, and its speakers were kept to their channels.
    by_channel: bool = False
    # Of such a source: how many channels (or tracks) it has, and those (numbered from 1) that held no
    # party: unused inputs, or a microphone that failed.
    channel_count: int = 0
    channels_without_party: tuple[int, ...] = ()
    # Speech, but no stretch of it long enough to embed: one speaker over all of it, voices unheard.
    unembedded: bool = False

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns})

    @property
    def all_turns(self) -> list[SpeakerTurn]:
        """Who speaks when, overlapped speech included (a turn per speaker), in time order."""
        return sorted([*self.turns, *self.overlaps], key=lambda t: (t.start, t.end, t.speaker))


def speaker_name(index: int) -> str:
    return f"SPEAKER_{index:02d}"


def join_turns(
    spans: Sequence[tuple[float, float]], labels: Sequence[str], bridge_gap: float = BRIDGE_GAP_S
) -> list[SpeakerTurn]:
    """Speaker turns from labelled spans in time order: where spans of different labels overlap, the
    boundary goes to the middle of the overlap; one speaker's spans less than `bridge_gap` apart
    join."""
    segs: list[list] = []  # [start, end, speaker]
    for (start, end), speaker in zip(spans, labels, strict=True):
        if not segs:
            segs.append([start, end, speaker])
            continue
        last = segs[-1]
        if speaker == last[2]:
            if start <= last[1]:
                last[1] = max(last[1], end)
            else:
                segs.append([start, end, speaker])
        else:
            if start < last[1]:
                mid = (start + last[1]) / 2
                last[1] = mid
                start = mid
            segs.append([start, end, speaker])
    merged: list[list] = []
    for seg in segs:
        if seg[1] <= seg[0]:
            continue
        if merged and merged[-1][2] == seg[2] and seg[0] - merged[-1][1] <= bridge_gap:
            merged[-1][1] = max(merged[-1][1], seg[1])
        else:
            merged.append(list(seg))
    return [SpeakerTurn(float(s), float(e), str(spk)) for s, e, spk in merged]


def single_speaker_turns(
    regions: Sequence[tuple[float, float]], bridge_gap: float = BRIDGE_GAP_S
) -> list[SpeakerTurn]:
    """The turns of a file with one speaker: its speech regions, joined across short pauses."""
    ordered = sorted(regions)
    return join_turns(ordered, [SINGLE_SPEAKER] * len(ordered), bridge_gap)


def subtract_spans(
    span: tuple[float, float], covered: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The parts of `span` (seconds) that none of `covered` covers, in time order."""
    pieces = [span]
    for a, b in covered:
        pieces = [
            piece
            for start, end in pieces
            for piece in ((start, min(end, a)), (max(start, b), end))
            if piece[1] - piece[0] > 1e-6
        ]
    return pieces


def split_overlaps(turns: Sequence[SpeakerTurn]) -> tuple[list[SpeakerTurn], list[SpeakerTurn]]:
    """Turns that may overlap -> (one speaker at a time, the overlapping rest). Who started first
    keeps the floor: of a later turn, only what no earlier turn covers joins the first list. One
    speaker's own overlapping turns are merged first."""
    merged: list[SpeakerTurn] = []
    for turn in sorted(turns, key=lambda t: (t.speaker, t.start)):
        last = merged[-1] if merged else None
        if last is not None and last.speaker == turn.speaker and turn.start < last.end:
            merged[-1] = SpeakerTurn(last.start, max(last.end, turn.end), last.speaker)
        else:
            merged.append(turn)
    exclusive: list[SpeakerTurn] = []
    overlaps: list[SpeakerTurn] = []
    for turn in sorted(merged, key=lambda t: (t.start, t.end)):
        taken = [(t.start, t.end) for t in exclusive if t.end > turn.start]
        free = subtract_spans((turn.start, turn.end), taken)
        exclusive.extend(SpeakerTurn(a, b, turn.speaker) for a, b in free)
        overlaps.extend(
            SpeakerTurn(a, b, turn.speaker) for a, b in subtract_spans((turn.start, turn.end), free)
        )
    exclusive.sort(key=lambda t: t.start)
    return exclusive, overlaps
