"""What travels through the pipeline: one FileWork per claimed file, filled in stage by stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from voxdock.engine.speakers import SpeakerOptions
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


@dataclass
class FileWork:
    job: ClaimedJob
    claimed_at: float = field(default_factory=time.monotonic)
    stage: str = "claimed"  # the stage working on it (or last to), for progress displays
    samples: np.ndarray | None = None  # 16 kHz mono float32, shared by every stage
    channel_levels: np.ndarray | None = None  # a source's channel (or track) levels (engine/channels.py)
    decode_note: str = ""  # what the decoder did that an operator should know (engine/decode.py)
    duration_s: float = 0.0
    speech: list[tuple[float, float]] = field(default_factory=list)  # VAD regions, seconds
    segments: list[Segment] = field(default_factory=list)
    fast_path: bool | None = None
    fast_path_similarity: float | None = None
    speaker_count: int | None = None
    # Who speaks when: one speaker at a time, and the second speaker where two talk at once.
    turns: list[SpeakerTurn] = field(default_factory=list)
    overlaps: list[SpeakerTurn] = field(default_factory=list)
    diarization: str = ""  # how its speakers were found (engine/diarization_note.py)
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
        self.channel_levels = None
