"""pyannote.audio diarization, for GPU hosts with a pipeline snapshot in the models directory.

It is the reference backend where it runs; on the CPU machines here pyannote.audio cannot load (its
torchaudio/torchcodec builds need CUDA), so constructing this raises and the engine falls back to
senko with a warning. The pipeline is read from the local snapshot's config.yaml; nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxdock.engine.diarization import DiarizationResult, SpeakerTurn, split_overlaps
from voxdock.engine.spans import SpanVoices


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

    def speech_regions(
        self, samples: np.ndarray, speech: list[tuple[float, float]]
    ) -> list[tuple[float, float]]:
        """pyannote finds speech itself: the engine's regions serve the fast path unchanged."""
        return list(speech)

    def can_find_two_speakers(self, regions: list[tuple[float, float]]) -> bool:
        """pyannote has no minimum we could compute: it is always asked."""
        return True

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
        if not speech:
            return DiarizationResult(turns=[])
        waveform = self._torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).unsqueeze(0)
        kwargs = {
            k: v
            for k, v in {
                "num_speakers": num_speakers,
                "min_speakers": min_speakers,
                "max_speakers": max_speakers,
            }.items()
            if v is not None
        }
        output = self.pipeline({"waveform": waveform, "sample_rate": 16000}, **kwargs)
        annotation = getattr(output, "speaker_diarization", output)  # pyannote 4 wraps the annotation
        turns = [
            SpeakerTurn(float(segment.start), float(segment.end), str(label))
            for segment, _track, label in annotation.itertracks(yield_label=True)
        ]
        exclusive, overlaps = split_overlaps(turns)  # pyannote reports two voices at once
        return DiarizationResult(turns=exclusive, overlaps=overlaps)
