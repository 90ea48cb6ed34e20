"""pyannote.audio diarization, for GPU hosts with a pipeline snapshot in the models directory.

It is the reference backend where it runs; on the CPU machines here pyannote.audio cannot load (its
torchaudio/torchcodec builds need CUDA), so constructing this raises and the engine falls back to
voxdock's own diarizer with a warning. The pipeline is read from the local snapshot's config.yaml; nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from voxdock.engine.cpu import model_call
from voxdock.engine.diarization.turns import DiarizationResult, SpeakerTurn, split_overlaps
from voxdock.engine.speakers import SpeakerOptions


class PyannoteUnavailable(RuntimeError):
    pass


class PyannoteDiarizer:
    name = "pyannote"

    def __init__(self, snapshot: Path, *, device: str = "cpu") -> None:
        try:
            import torch
            from pyannote.audio import Pipeline
        except Exception as exc:  # ImportError, or a CUDA-only torchaudio failing to load
            raise PyannoteUnavailable(f"pyannote.audio does not import here: {exc}") from exc
        config = snapshot / "config.yaml"
        if not config.exists():
            raise PyannoteUnavailable(f"{snapshot} has no config.yaml")
        try:
            self.pipeline = Pipeline.from_pretrained(str(config))
        except Exception as exc:
            raise PyannoteUnavailable(f"cannot load the pipeline in {snapshot}: {exc}") from exc
        if self.pipeline is None:
            raise PyannoteUnavailable(f"cannot load the pipeline in {snapshot}")
        self._torch = torch
        self.pipeline.to(torch.device(device))
        self.name = f"pyannote/{snapshot.name}"

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
        """pyannote's own pipeline (it has no monologue fast path: `fast_path_threshold` is unused;
        it hears the mono mix and finds speech itself: `channel_levels` and `vad_speech` are unused;
        it runs as one call, so `check_stop` is heard only before it)."""
        if check_stop is not None:
            check_stop()
        speakers = speakers or SpeakerOptions()
        if np.asarray(samples).size == 0:
            return DiarizationResult(turns=[])
        waveform = self._torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).unsqueeze(0)
        kwargs = speakers.as_options()
        with model_call("pyannote"):  # its whole pipeline, clustering included
            output = self.pipeline({"waveform": waveform, "sample_rate": 16000}, **kwargs)
        annotation = getattr(output, "speaker_diarization", output)  # pyannote 4 wraps the annotation
        turns = [
            SpeakerTurn(float(segment.start), float(segment.end), str(label))
            for segment, _track, label in annotation.itertracks(yield_label=True)
        ]
        exclusive, overlaps = split_overlaps(turns)  # pyannote reports two voices at once
        return DiarizationResult(turns=exclusive, overlaps=overlaps)
