"""What travels through the pipeline: one FileWork per claimed file, filled in stage by stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from voxdock.storage.jobs import ClaimedJob

if TYPE_CHECKING:  # the diarization module pulls in the clustering code; the console needs none of it
    from voxdock.engine.diarization import SpeakerTurn


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str
    probability: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    speaker: str | None = None
    voice_embedding: np.ndarray | None = None
    text_embedding: np.ndarray | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SpeakerOptions:
    """What the operator knows about the speakers of a file (ingest --speakers / --min/--max-speakers)."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SpeakerOptions:
        def get(name: str) -> int | None:
            value = options.get(name)
            return int(value) if value is not None else None

        return cls(get("num_speakers"), get("min_speakers"), get("max_speakers"))

    @classmethod
    def parse(cls, text: str) -> SpeakerOptions:
        """An operator's entry: "" (estimate), "2" (known count) or "2-4" (bounds); ValueError
        with the reason otherwise."""
        text = text.strip()
        if not text:
            return cls()
        low, sep, high = (part.strip() for part in text.partition("-"))
        if not (low.isdigit() and (not sep or high.isdigit())):
            raise ValueError(f"speakers: {text!r} is not a count (2) or a range (2-4)")
        if not sep:
            return cls(num_speakers=_at_least_one(int(low)))
        lo, hi = _at_least_one(int(low)), _at_least_one(int(high))
        if lo > hi:
            raise ValueError(f"speakers: {lo} is more than {hi}")
        return cls(min_speakers=lo, max_speakers=hi)

    def as_options(self) -> dict[str, int]:
        """The batch options (only what is known)."""
        given = {
            "num_speakers": self.num_speakers,
            "min_speakers": self.min_speakers,
            "max_speakers": self.max_speakers,
        }
        return {name: value for name, value in given.items() if value is not None}

    def describe(self) -> str:
        """For listings: "auto" when nothing is known, else "2", "2-4", ">= 2" or "<= 3"."""
        if self.num_speakers is not None:
            return str(self.num_speakers)
        if self.min_speakers is not None and self.max_speakers is not None:
            return f"{self.min_speakers}-{self.max_speakers}"
        if self.min_speakers is not None:
            return f">= {self.min_speakers}"
        if self.max_speakers is not None:
            return f"<= {self.max_speakers}"
        return "auto"


def _at_least_one(count: int) -> int:
    if count < 1:
        raise ValueError("speakers: a file has at least one speaker")
    return count


@dataclass
class FileWork:
    job: ClaimedJob
    claimed_at: float = field(default_factory=time.monotonic)
    stage: str = "claimed"  # the stage working on it (or last to), for progress displays
    samples: np.ndarray | None = None  # 16 kHz mono float32, shared by every stage
    duration_s: float = 0.0
    speech: list[tuple[float, float]] = field(default_factory=list)  # VAD regions, seconds
    segments: list[Segment] = field(default_factory=list)
    fast_path: bool | None = None
    fast_path_similarity: float | None = None
    speaker_count: int | None = None
    # Who speaks when: one speaker at a time, and the second speaker where two talk at once.
    turns: list[SpeakerTurn] = field(default_factory=list)
    overlaps: list[SpeakerTurn] = field(default_factory=list)
    diarizer: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.job.path

    @property
    def speakers(self) -> SpeakerOptions:
        return SpeakerOptions.from_options(self.job.options)

    def release_audio(self) -> None:
        """Drop the decoded audio once no later stage needs it (long files are large)."""
        self.samples = None
