"""Text embeddings of segment texts with sentence-transformers, normalised for cosine search."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxdock.engine.cpu import model_call

MODEL_CALL = "text-embedding"  # its calls' name in the host-cost figures (engine/cpu.py)


class TextEncoder:
    def __init__(self, path: Path, device: str = "cpu") -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.model.eval()
        self.device = device
        dimension = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension() or 0)
        # sentence-transformers 6 renamed tokenize() to preprocess().
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        # HF fast tokenizers raise "Already borrowed" when two threads tokenise at once; the forward
        # pass itself is safe to run concurrently.
        self._tokenizer_lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised, in one forward pass."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        from sentence_transformers.util import batch_to_device

        torch = self._torch
        with self._tokenizer_lock:
            features = self._preprocess(list(texts))
        with model_call(MODEL_CALL):
            features = batch_to_device(features, self.model.device)
            with torch.inference_mode():
                out = self.model.forward(features)["sentence_embedding"]
                out = torch.nn.functional.normalize(out.float(), p=2, dim=1)
            return out.cpu().numpy()
