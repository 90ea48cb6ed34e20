"""Voice activity detection, once per file (Silero VAD v6 as shipped inside faster-whisper).

The speech regions feed ASR (handed to Whisper's pipeline in place of its own VAD run), the
fast-path check and diarization, so no stage runs a VAD over the file again.

On a CUDA host the network runs on the GPU (`run_on`): the same weights in torch
(engine/silero_torch.py), batched over the file's windows, giving the same probabilities to float32
rounding and so the same regions. Elsewhere faster-whisper's ONNX Runtime session runs it on the CPU.
Either way the network's runs count as model calls in the host-cost figures (engine/cpu.py); the
rest of `get_speech_timestamps` (padding, the loop that turns probabilities into regions) is host
work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import faster_whisper.vad
import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from voxdock.engine.cpu import model_call
from voxdock.engine.oom import AdaptiveBatch

SAMPLE_RATE = 16000
MAX_CLIP_S = 30.0  # Whisper's window

# The options faster-whisper's batched pipeline uses by default, so transcripts match its own VAD path.
VAD_OPTIONS = VadOptions(max_speech_duration_s=MAX_CLIP_S, min_silence_duration_ms=160)
MODEL_CALL = "silero-vad"  # its calls' name in the host-cost figures (engine/cpu.py)


_calling = threading.local()  # per VAD call: what to check before each run of the network


class _CountedSession:
    """An ONNX Runtime session whose `run` counts as a model call, and hears a stop before each run
    (faster-whisper's model runs it on 10,000 windows at a time: a 3-hour file's VAD is 34 runs, half
    a minute on a loaded CPU); everything else passes through."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def run(self, *args: Any, **kwargs: Any) -> Any:
        check_stop = getattr(_calling, "check_stop", None)
        if check_stop is not None:
            check_stop()
        with model_call(MODEL_CALL):
            return self._session.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class _CountedModel:
    """A VAD network whose calls count as model calls."""

    def __init__(self, model: Callable[..., np.ndarray]) -> None:
        self._model = model

    def __call__(self, audio: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        with model_call(MODEL_CALL):
            return self._model(audio, *args, **kwargs)


_counted_lock = threading.Lock()
_onnx_model = faster_whisper.vad.get_vad_model  # faster-whisper's own (cached) ONNX model


def count_vad_calls() -> None:
    """Count the runs of faster-whisper's Silero session (one per process, cached) as model calls."""
    model = faster_whisper.vad.get_vad_model()
    with _counted_lock:
        session = getattr(model, "session", None)
        if session is not None and not isinstance(session, _CountedSession):
            model.session = _CountedSession(session)


_device_blocks: AdaptiveBatch | None = None


def device_blocks() -> AdaptiveBatch | None:
    """The block size the torch network runs in (halved on out-of-memory), None with the ONNX model:
    the engine sends its back-offs to the console and its calls to the VRAM meter."""
    return _device_blocks


def run_on(device: str, *, torch_network: bool | None = None) -> str:
    """Run Silero on `device` from now on, in this process (every VAD call goes through
    faster-whisper's `get_vad_model`): the torch network (by default on CUDA; the tests run it on
    the CPU), else faster-whisper's ONNX model on the CPU. Returns the runtime."""
    import torch

    if torch_network is None:
        torch_network = torch.device(device).type == "cuda"
    global _device_blocks
    if not torch_network:
        with _counted_lock:
            faster_whisper.vad.get_vad_model = _onnx_model
            _device_blocks = None
        count_vad_calls()
        return "onnxruntime/cpu"
    from voxdock.engine.silero_torch import TorchSileroVad

    network = TorchSileroVad(device)
    model = _CountedModel(network)
    with _counted_lock:
        faster_whisper.vad.get_vad_model = lambda: model
        _device_blocks = network.blocks
    return f"torch/{torch.device(device).type}"


def detect_speech(
    samples: np.ndarray, check_stop: Callable[[], None] | None = None
) -> list[tuple[float, float]]:
    """Speech regions of 16 kHz mono audio, in seconds, in order; none for silence. `check_stop` is
    called before each run of the ONNX network on it; what it raises abandons the file."""
    if samples.shape[0] == 0:
        return []
    count_vad_calls()
    _calling.check_stop = check_stop
    try:
        stamps = get_speech_timestamps(samples, VAD_OPTIONS, sampling_rate=SAMPLE_RATE)
    finally:
        _calling.check_stop = None
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def speech_seconds(speech: list[tuple[float, float]]) -> float:
    return float(sum(end - start for start, end in speech))
