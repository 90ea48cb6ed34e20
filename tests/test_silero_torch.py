"""Silero VAD in torch (engine/silero_torch.py) against faster-whisper's ONNX model, on CPU: the same
probabilities to float32 rounding, and the same speech timestamps from `get_speech_timestamps`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import faster_whisper.vad
import numpy as np
import pytest
import torch
from conftest import MEDIA, REAL
from faster_whisper.vad import get_speech_timestamps

from voxdock.engine import vad
from voxdock.engine.cpu import take_model_time
from voxdock.engine.decode import decode_file
from voxdock.engine.silero_torch import WINDOW, TorchSileroVad
from voxdock.engine.vad import SAMPLE_RATE, VAD_OPTIONS, detect_speech

# Real recordings that ship with the tests (meetings, a call, a speech, read speech), and espeak ones.
RECORDINGS = sorted(REAL.glob("*.wav")) + sorted(MEDIA.glob("*.wav"))
# Measured: at most 2.9e-6 over these recordings, about 25 times less than the closest any of their
# probabilities comes to a threshold of VAD_OPTIONS (7.6e-5); the timestamps are compared directly too.
TOLERANCE = 1e-4

Model = Callable[[np.ndarray], np.ndarray]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread, as the ONNX model runs with. torch's CPU LSTM makes each window's step a
    parallel region: with two threads on a busy 2-core host every step can wait at its barrier for a
    time slice (measured: 6 s for 1,000 windows, against 6 ms on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def onnx_vad() -> Model:
    return faster_whisper.vad.get_vad_model()


@pytest.fixture(scope="module")
def torch_vad() -> TorchSileroVad:
    # Blocks much shorter than a recording, so that the LSTM state is carried across blocks.
    return TorchSileroVad("cpu", block_windows=200)


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    """Each recording, and all of them end to end twice (5.6 minutes, over 10,500 windows: longer than
    the ONNX model's 10,000-window runs, so its state is carried from one run to the next)."""
    assert len(RECORDINGS) >= 6
    audio = {path.name: decode_file(path).samples for path in RECORDINGS}
    audio["all, end to end"] = np.concatenate(list(audio.values()) * 2)
    assert audio["all, end to end"].shape[0] > 10_000 * WINDOW
    return audio


def padded(audio: np.ndarray) -> np.ndarray:
    """The input `get_speech_timestamps` gives the model: up to a whole window more, always some."""
    return np.pad(audio, (0, WINDOW - audio.shape[0] % WINDOW))


def probabilities(model: Model, audio: np.ndarray) -> np.ndarray:
    return model(audio.copy())  # a copy: the ONNX model writes into its input


def timestamps(model: Model, audio: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    monkeypatch.setattr(faster_whisper.vad, "get_vad_model", lambda: model)
    return get_speech_timestamps(audio, VAD_OPTIONS)


def test_probabilities_match_onnx(
    speech: dict[str, np.ndarray], onnx_vad: Model, torch_vad: TorchSileroVad
) -> None:
    differences = {}
    for name, audio in speech.items():
        expected = probabilities(onnx_vad, padded(audio))
        got = probabilities(torch_vad, padded(audio))
        assert got.shape == expected.shape == (padded(audio).shape[0] // WINDOW,)
        assert got.dtype == expected.dtype == np.float32
        differences[name] = float(np.abs(got - expected).max())
    assert max(differences.values()) < TOLERANCE, differences


def test_speech_timestamps_match_onnx(
    speech: dict[str, np.ndarray],
    onnx_vad: Model,
    torch_vad: TorchSileroVad,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mismatched = {}
    regions = 0
    for name, audio in speech.items():
        expected = timestamps(onnx_vad, audio, monkeypatch)
        got = timestamps(torch_vad, audio, monkeypatch)
        regions += len(expected)
        if got != expected:
            mismatched[name] = (expected, got)
    assert mismatched == {}
    assert regions > 80  # the recordings are mostly speech: the comparison covers many boundaries


def test_silence(onnx_vad: Model, torch_vad: TorchSileroVad, monkeypatch: pytest.MonkeyPatch) -> None:
    silence = np.zeros(5 * SAMPLE_RATE, dtype=np.float32)
    got = probabilities(torch_vad, padded(silence))
    assert np.abs(got - probabilities(onnx_vad, padded(silence))).max() < TOLERANCE
    assert timestamps(torch_vad, silence, monkeypatch) == timestamps(onnx_vad, silence, monkeypatch) == []


def test_one_window(onnx_vad: Model, torch_vad: TorchSileroVad, monkeypatch: pytest.MonkeyPatch) -> None:
    # Non-zero to the end: the ONNX model zeroes its input's last 64 samples (its context buffer is a
    # view into the audio), which changes this window's probability by about 0.04. The torch model
    # must see the same input, without writing into the caller's array.
    window = (0.1 * np.random.default_rng(0).standard_normal(WINDOW)).astype(np.float32)
    original = window.copy()
    got = torch_vad(window)
    assert np.array_equal(window, original)
    assert got.shape == (1,) and got.dtype == np.float32
    assert abs(float(got[0]) - float(probabilities(onnx_vad, window)[0])) < TOLERANCE
    assert timestamps(torch_vad, window, monkeypatch) == timestamps(onnx_vad, window, monkeypatch)


def test_out_of_gpu_memory_halves_the_block_and_changes_no_probability(
    speech: dict[str, np.ndarray], torch_vad: TorchSileroVad, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block of windows that does not fit is retried in halves from the same LSTM state (the stage's
    out-of-memory backoff, engine/oom.py): every window's probability is what it was."""
    audio = padded(speech["all, end to end"])
    expected = probabilities(torch_vad, audio)
    tight = TorchSileroVad("cpu", block_windows=400)
    encode = tight._net.encode
    sizes: list[int] = []
    ran: list[int] = []

    def encode_on_a_full_card(windows: torch.Tensor) -> torch.Tensor:
        sizes.append(int(windows.shape[0]))
        if windows.shape[0] > 100:  # the real error type, as CUDA raises it
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        ran.append(int(windows.shape[0]))
        return encode(windows)

    monkeypatch.setattr(tight._net, "encode", encode_on_a_full_card)
    got = probabilities(tight, audio)
    assert sizes[:3] == [400, 200, 100]  # halved twice, then it fits
    assert max(ran) == 100 and sum(ran) == audio.shape[0] // WINDOW  # (it tries 200 again now and then)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_rejects_what_the_onnx_model_rejects(torch_vad: TorchSileroVad) -> None:
    with pytest.raises(ValueError):
        torch_vad(np.zeros(WINDOW + 1, dtype=np.float32))
    with pytest.raises(ValueError):
        torch_vad(np.zeros((2, WINDOW), dtype=np.float32))


def test_the_engine_runs_the_torch_network_where_it_is_told_and_finds_the_same_regions(
    speech: dict[str, np.ndarray],
) -> None:
    """`vad.run_on` (the loader calls it with the compute device: torch on CUDA) routes every VAD
    call through the torch network; the engine's VAD then finds the same regions, and its calls
    still count as model calls. Here the same code runs on the CPU."""
    audio = speech["all, end to end"]
    assert vad.run_on("cpu") == "onnxruntime/cpu"
    onnx_regions = detect_speech(audio)
    try:
        assert vad.run_on("cpu", torch_network=True) == "torch/cpu"
        assert not hasattr(faster_whisper.vad.get_vad_model(), "session")  # not the ONNX model
        take_model_time()
        torch_regions = detect_speech(audio)
        assert take_model_time()[vad.MODEL_CALL].calls == 1
    finally:
        assert vad.run_on("cpu") == "onnxruntime/cpu"
    assert hasattr(faster_whisper.vad.get_vad_model(), "session")
    assert len(onnx_regions) > 30
    assert torch_regions == onnx_regions


def test_a_stop_is_heard_between_runs_of_the_onnx_network(speech: dict[str, np.ndarray]) -> None:
    """The engine's VAD on the CPU hears a stop before each run of the network (10,000 windows): a
    long file's VAD gives up part-way when the engine hands its files back."""

    class Stop(Exception):
        pass

    audio = speech["all, end to end"]  # over 10,000 windows: two runs
    assert vad.run_on("cpu") == "onnxruntime/cpu"
    looks: list[int] = []

    def stop_at_second_run() -> None:
        looks.append(1)
        if len(looks) == 2:
            raise Stop

    take_model_time()
    with pytest.raises(Stop):
        detect_speech(audio, stop_at_second_run)
    assert take_model_time()[vad.MODEL_CALL].calls == 1  # the second run never started
    assert detect_speech(audio) == detect_speech(audio, lambda: None)  # no stop: as without
