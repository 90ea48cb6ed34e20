"""Kaldi filterbank features computed by torch (engine/fbank.py), against a float64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxdock.engine.fbank import (
    FFT_SIZE,
    FRAME_LENGTH,
    FRAME_SHIFT,
    NUM_MEL_BINS,
    PREEMPHASIS,
    SAMPLE_RATE,
    fbank,
    fbank_tensor,
    frame_span,
    mel_matrix,
    num_frames,
    povey_window,
)


def reference_fbank(samples: np.ndarray) -> np.ndarray:
    """The same Kaldi recipe in float64 numpy, frame by frame (the project's former implementation):
    DC removal, pre-emphasis, Povey window, |FFT|^2, mel filters, log with a floor."""
    x = np.asarray(samples, dtype=np.float64)
    if x.shape[0] < FRAME_LENGTH:
        x = np.pad(x, (0, FRAME_LENGTH - x.shape[0]))
    window = povey_window().astype(np.float64)
    mels = mel_matrix().astype(np.float64)
    rows = []
    for i in range(num_frames(x.shape[0])):
        frame = x[i * FRAME_SHIFT : i * FRAME_SHIFT + FRAME_LENGTH].copy()
        frame -= frame.mean()
        emphasised = frame - PREEMPHASIS * np.concatenate([frame[:1], frame[:-1]])
        power = np.abs(np.fft.rfft(emphasised * window, n=FFT_SIZE)) ** 2
        rows.append(np.log(np.maximum(power @ mels, np.finfo(np.float32).eps)))
    return np.asarray(rows)


def _tone(hz: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Noise shaped by a few moving resonances, with level changes: features far from the floor."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    voiced = sum(
        np.sin(2 * np.pi * f * (1 + 0.1 * np.sin(t * k)) * t) for k, f in enumerate((150, 700, 2300))
    )
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.1 * envelope * voiced + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_shape_follows_the_frame_grid() -> None:
    assert num_frames(SAMPLE_RATE) == 1 + (SAMPLE_RATE - FRAME_LENGTH) // FRAME_SHIFT == 98
    assert fbank(_tone(440)).shape == (98, NUM_MEL_BINS)
    assert fbank(_tone(440)).dtype == np.float32
    # Shorter than one 25 ms frame (even empty): zero-padded to one frame, never empty.
    assert fbank(np.zeros(100, np.float32)).shape == (1, NUM_MEL_BINS)
    assert fbank(np.zeros(0, np.float32)).shape == (1, NUM_MEL_BINS)
    assert fbank(np.zeros(FRAME_LENGTH + FRAME_SHIFT - 1, np.float32)).shape == (1, NUM_MEL_BINS)
    assert fbank(np.zeros(FRAME_LENGTH + FRAME_SHIFT, np.float32)).shape == (2, NUM_MEL_BINS)


def test_matches_the_float64_reference() -> None:
    for samples in (_speechlike(), _tone(1000, 0.5), _speechlike(0.02, seed=1)):
        ours = fbank(samples, mean_normalise=False)
        np.testing.assert_allclose(ours, reference_fbank(samples), atol=2e-3, rtol=1e-4)


def test_digital_silence_sits_on_the_log_floor() -> None:
    feats = fbank(np.zeros(SAMPLE_RATE, np.float32), mean_normalise=False)
    assert np.all(np.isfinite(feats))
    np.testing.assert_allclose(feats, np.log(np.finfo(np.float32).eps), rtol=1e-6)


def test_mean_normalisation_centres_each_bin_over_the_clip() -> None:
    samples = _speechlike()
    raw = fbank(samples, mean_normalise=False)
    normalised = fbank(samples)
    np.testing.assert_allclose(normalised.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalised, raw - raw.mean(axis=0, keepdims=True), atol=1e-4)
    assert raw.mean() < -1.0 or raw.mean() > 1.0  # the raw features are not centred by themselves


def test_a_tone_lands_in_its_mel_bin() -> None:
    mels = mel_matrix()
    assert mels.shape == (FFT_SIZE // 2 + 1, NUM_MEL_BINS)
    assert np.all(mels >= 0) and np.all(mels[-1] == 0)  # Kaldi ignores the Nyquist bin
    assert np.all(mels.sum(axis=0) > 0)  # every mel bin sees some FFT bins
    for hz in (300.0, 1000.0, 4000.0):
        feats = fbank(_tone(hz), mean_normalise=False)
        expected = int(np.argmax(mels[round(hz * FFT_SIZE / SAMPLE_RATE)]))
        loudest = np.argmax(feats[5:-5], axis=1)  # frames away from the edges
        assert np.all(np.abs(loudest - expected) <= 1), hz
    # Higher tones, higher bins.
    assert np.argmax(fbank(_tone(300), mean_normalise=False)[50]) < np.argmax(
        fbank(_tone(3000), mean_normalise=False)[50]
    )


def test_the_tensor_path_is_the_numpy_path() -> None:
    samples = _speechlike(1.0, seed=3)
    with torch.inference_mode():
        tensor = fbank_tensor(torch.from_numpy(samples))
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (98, NUM_MEL_BINS)
    np.testing.assert_array_equal(tensor.numpy(), fbank(samples, mean_normalise=False))


@pytest.mark.parametrize(
    ("start", "end", "total", "expected"),
    [
        (0.0, 1.0, 98, (0, 98)),  # a one-second file: every frame
        (0.5, 0.6, 1000, (50, 58)),  # 10 ms grid; the last 25 ms frame must end by 0.6 s
        (2.0, 2.0, 1000, (200, 201)),  # an empty span still gets a frame
        (2.0, 2.01, 1000, (200, 201)),
        (20.0, 30.0, 98, (97, 98)),  # past the end: the file's last frame
        (-1.0, 0.5, 1000, (0, 48)),
    ],
)
def test_frame_span(start: float, end: float, total: int, expected: tuple[int, int]) -> None:
    assert frame_span(start, end, total) == expected
