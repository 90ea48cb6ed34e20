"""A second speaker-embedding view for diarization and the fast path: GE2E (Resemblyzer's weights).

CAM++ (192-d, the project's voice model) confuses some pairs of voices that GE2E (256-d, a 3-layer
LSTM trained with the generalised end-to-end loss) tells apart, and the other way round: clustering
on both views together (engine/clustering.py) finds the speakers where either alone merges two
similar voices or splits one (bench/results/diarization.md). GE2E embeddings are only used inside
the diarizer and the fast path; what the engine stores stays in CAM++ space.

Weights: `pretrained_models/resemblyzer/pretrained.pt` when present, else `pretrained.pt` inside the
`resemblyzer` wheel (PyPI `resemblyzer==0.1.4`, Apache-2.0). The package itself is never imported
(its audio module pulls in webrtcvad and librosa): the file is located with importlib and loaded
into the network defined here. Features are computed here too, the way Resemblyzer computes them:
40-bin mel power spectrogram (librosa's Slaney mel scale and norm, 25 ms Hann window, 10 ms hop,
centred frames), after raising the file's level to -30 dBFS (never lowering it). A span's embedding
is the normalised mean of 1.6 s partials (1.3 per second), or of one partial as long as the span
when it is shorter.

If the weights are missing, `load_ge2e()` returns None once with a warning and callers fall back to
CAM++ alone. Loading is lazy, once per process, under a lock; the model is read-only afterwards
(eval mode, inference only), so one instance serves many threads. Cost on 2 CPU cores: about 0.5 %
of real time for the diarizer's windows (300 partials per second, batched).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIALS_PER_S = 1.3
MIN_FRAMES = 10
TARGET_DBFS = -30.0
EMBEDDING_DIM = 256
MODEL_NAME = "resemblyzer-ge2e"

_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    return np.where(freq >= 1000.0, 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) / logstep, freq * 3 / 200)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(logstep * (mel - 15.0)), mel * 200 / 3)


@lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    """(n_fft/2+1, 40) triangular filters, area-normalised (librosa's `norm="slaney"`)."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    top = _hz_to_mel(np.array(SAMPLE_RATE / 2))
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), top, N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    weights = np.zeros((N_MELS, fft_freqs.size))
    for i in range(N_MELS):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : N_MELS + 2] - edges[:N_MELS]))[:, None]
    return weights.T.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)  # periodic


def mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """(frames, 40) mel power spectrogram; frame i is centred at sample i * 160."""
    y = np.pad(np.asarray(samples, dtype=np.float32), (N_FFT // 2, N_FFT // 2))
    count = 1 + (y.shape[0] - N_FFT) // HOP
    if count <= 0:
        return np.zeros((0, N_MELS), np.float32)
    out = np.empty((count, N_MELS), np.float32)
    step = 4096  # frames per block, to bound memory on long files
    window = _hann()
    for a in range(0, count, step):
        b = min(count, a + step)
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(a, b)[:, None]
        spectrum = np.abs(np.fft.rfft(y[idx] * window, axis=1)) ** 2
        out[a:b] = spectrum.astype(np.float32) @ _mel_matrix()
    return out


def level_gain(samples: np.ndarray) -> float:
    """The factor that brings the file to -30 dBFS RMS, never below 1 (Resemblyzer's preprocessing)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    if rms <= 0.0:
        return 1.0
    return max(1.0, 10 ** ((TARGET_DBFS - 20 * math.log10(rms)) / 20))


def find_weights(models_dir: Path | None = None) -> Path | None:
    """`<models_dir>/resemblyzer/pretrained.pt`, else the file inside the installed wheel, else None."""
    if models_dir is not None:
        local = Path(models_dir) / "resemblyzer" / "pretrained.pt"
        if local.is_file():
            return local
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / "pretrained.pt"
        if candidate.is_file():
            return candidate
    return None


class Ge2eEncoder:
    """GE2E speaker encoder (40 mel -> LSTM 3x256 -> linear 256 -> ReLU -> L2 norm). Thread-safe."""

    name = MODEL_NAME

    def __init__(self, weights: Path) -> None:
        import torch

        class _Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = torch.nn.LSTM(N_MELS, 256, 3, batch_first=True)
                self.linear = torch.nn.Linear(256, EMBEDDING_DIM)

            def forward(self, mels: torch.Tensor) -> torch.Tensor:
                _, (hidden, _) = self.lstm(mels)
                out = torch.relu(self.linear(hidden[-1]))
                return out / torch.norm(out, dim=1, keepdim=True).clamp_min(1e-12)

        # The checkpoint also holds the training loss's scale parameters; only the network is needed.
        checkpoint = torch.load(str(weights), map_location="cpu", weights_only=True)
        state = checkpoint.get("model_state", checkpoint)
        net = _Net()
        net.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})
        net.eval()
        self._torch = torch
        self._net = net
        self.weights = weights

    def embed_mels(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._net(self._torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy()

    def embed_spans(self, samples: np.ndarray, spans: Sequence[tuple[float, float]]) -> np.ndarray:
        """(n, 256) unit-norm embeddings of the spans (seconds) of one file's 16 kHz samples."""
        out = np.zeros((len(spans), EMBEDDING_DIM), np.float32)
        if not spans:
            return out
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        mels = mel_spectrogram(samples * level_gain(samples))
        total = mels.shape[0]
        step = round(SAMPLE_RATE / PARTIALS_PER_S / HOP)
        jobs: dict[int, list[tuple[int, int]]] = {}  # partial length -> (span index, first frame)
        for i, (start, end) in enumerate(spans):
            a = min(max(round(start * SAMPLE_RATE / HOP), 0), max(total - MIN_FRAMES, 0))
            b = min(max(round(end * SAMPLE_RATE / HOP), a + MIN_FRAMES), total)
            length = b - a
            if length <= 0:
                continue  # nothing to hear: the embedding stays zero
            if length <= PARTIAL_FRAMES:
                jobs.setdefault(length, []).append((i, a))
                continue
            count = 1 + math.ceil((length - PARTIAL_FRAMES) / step)
            for j in range(count):
                jobs.setdefault(PARTIAL_FRAMES, []).append((i, min(a + j * step, b - PARTIAL_FRAMES)))
        for length, items in jobs.items():
            for c in range(0, len(items), 256):
                chunk = items[c : c + 256]
                batch = np.stack([mels[s : s + length] for _, s in chunk])
                for (i, _), vec in zip(chunk, self.embed_mels(batch), strict=True):
                    out[i] += vec
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def load_ge2e(models_dir: Path | None = None) -> Ge2eEncoder | None:
    """The process-wide GE2E encoder, loaded on first use; None (with one warning) when unavailable."""
    key = str(models_dir)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        encoder: Ge2eEncoder | None = None
        weights = find_weights(models_dir)
        if weights is None:
            log.warning(
                "GE2E speaker weights not found (pip install --no-deps resemblyzer==0.1.4, or put "
                "pretrained.pt under pretrained_models/resemblyzer/): diarization uses CAM++ alone"
            )
        else:
            try:
                encoder = Ge2eEncoder(weights)
            except Exception as exc:  # a damaged file, an odd torch: CAM++ alone still works
                log.warning("GE2E speaker model failed to load (%s): diarization uses CAM++ alone", exc)
        _loaded[key] = encoder
        return encoder
