"""Voice activity detection, once per file (Silero VAD v6 as shipped inside faster-whisper).

The speech regions feed ASR (as its clips), the fast-path check and diarization, so no stage runs
its own VAD over the file again.
"""

from __future__ import annotations

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

SAMPLE_RATE = 16000
MAX_CLIP_S = 30.0  # Whisper's window

# The options faster-whisper's batched pipeline uses by default, so transcripts match its own VAD path.
VAD_OPTIONS = VadOptions(max_speech_duration_s=MAX_CLIP_S, min_silence_duration_ms=160)


def detect_speech(samples: np.ndarray) -> list[tuple[float, float]]:
    """Speech regions of 16 kHz mono audio, in seconds, in order; none for silence."""
    if samples.shape[0] == 0:
        return []
    stamps = get_speech_timestamps(samples, VAD_OPTIONS, sampling_rate=SAMPLE_RATE)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def speech_seconds(speech: list[tuple[float, float]]) -> float:
    return float(sum(end - start for start, end in speech))
