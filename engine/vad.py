"""Voice activity detection, once per file (Silero VAD v6 as shipped inside faster-whisper).

The speech regions feed ASR (as its clips), the fast-path check and diarization, so no stage runs
its own VAD over the file again.

The network's runs (one ONNX Runtime session, shared with faster-whisper's own VAD) count as model
calls in the host-cost figures (engine/cpu.py); the rest of `get_speech_timestamps` (padding, the
Python loop that turns probabilities into regions) is host work.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

from voxdock.engine.cpu import model_call

SAMPLE_RATE = 16000
MAX_CLIP_S = 30.0  # Whisper's window

# The options faster-whisper's batched pipeline uses by default, so transcripts match its own VAD path.
VAD_OPTIONS = VadOptions(max_speech_duration_s=MAX_CLIP_S, min_silence_duration_ms=160)
MODEL_CALL = "silero-vad"  # its calls' name in the host-cost figures (engine/cpu.py)


class _CountedSession:
    """An ONNX Runtime session whose `run` counts as a model call; everything else passes through."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def run(self, *args: Any, **kwargs: Any) -> Any:
        with model_call(MODEL_CALL):
            return self._session.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


_counted_lock = threading.Lock()


def count_vad_calls() -> None:
    """Count the runs of faster-whisper's Silero session (one per process, cached) as model calls."""
    model = get_vad_model()
    with _counted_lock:
        if not isinstance(model.session, _CountedSession):
            model.session = _CountedSession(model.session)


def detect_speech(samples: np.ndarray) -> list[tuple[float, float]]:
    """Speech regions of 16 kHz mono audio, in seconds, in order; none for silence."""
    if samples.shape[0] == 0:
        return []
    count_vad_calls()
    stamps = get_speech_timestamps(samples, VAD_OPTIONS, sampling_rate=SAMPLE_RATE)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def speech_seconds(speech: list[tuple[float, float]]) -> float:
    return float(sum(end - start for start, end in speech))
