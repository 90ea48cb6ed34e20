"""From chunks and clusters back to who speaks when, overlapped speech included.

Every frame of the file lies in one or two chunks (four with a shorter step). For each chunk, each
local speaker's probability of talking is credited to the cluster that speaker was assigned to, and
averaged over the chunks that see the frame: how much each of the file's speakers talks there. How
many talk at once comes from the same chunks: the frame is speech where the averaged probability of
"not silence" passes `SPEECH_THRESHOLD`, and holds two voices where the probability of a pair passes
`OVERLAP_THRESHOLD`; that many of the most active speakers get the frame. Both thresholds sit below
one half on purpose: the model is cautious with quiet, distant and overlapped speech, and on the AMI
excerpts lowering them from 0.5 / 0.5 to the calibrated values took missed speech from 12.6 % to
9.9 % for 0.9 points of false alarm (with the speakers known: bench/diarization_eval.py).
"""

from __future__ import annotations

import numpy as np

from voxdock.engine.diarization.segmentation import (
    CHUNK_FRAMES,
    FRAME_SAMPLES,
    PAIR_CLASSES,
    SAMPLE_RATE,
    SILENCE_CLASS,
    ChunkSegmentation,
)
from voxdock.engine.diarization.turns import BRIDGE_GAP_S, SpeakerTurn

SPEECH_THRESHOLD = 0.4
OVERLAP_THRESHOLD = 0.2
MIN_TURN_S = 0.0


def _average_over_chunks(seg: ChunkSegmentation, per_chunk: np.ndarray) -> np.ndarray:
    """(chunks, 589, d) -> (file frames, d): each frame's mean over the chunks that contain it."""
    frames = seg.num_frames
    total = np.zeros((frames + CHUNK_FRAMES, per_chunk.shape[-1]), np.float32)
    seen = np.zeros((frames + CHUNK_FRAMES, 1), np.float32)
    for row, offset in enumerate(seg.offsets.tolist()):
        total[offset : offset + CHUNK_FRAMES] += per_chunk[row]
        seen[offset : offset + CHUNK_FRAMES] += 1.0
    return (total / np.maximum(seen, 1.0))[:frames]


def voices_per_frame(
    seg: ChunkSegmentation,
    speech_threshold: float = SPEECH_THRESHOLD,
    overlap_threshold: float = OVERLAP_THRESHOLD,
) -> np.ndarray:
    """(file frames,) how many voices talk in each frame: 0, 1 or 2."""
    probs = seg.probs.astype(np.float32)
    speech = 1.0 - probs[..., SILENCE_CLASS]
    pair = probs[..., PAIR_CLASSES].sum(axis=-1)
    mean = _average_over_chunks(seg, np.stack([speech, pair], axis=-1))
    return (mean[:, 0] > speech_threshold).astype(np.int64) + (mean[:, 1] > overlap_threshold)


def speaker_activity(
    seg: ChunkSegmentation, chunk: np.ndarray, local: np.ndarray, labels: np.ndarray, count: int
) -> np.ndarray:
    """(file frames, count) how much each cluster talks, from the local speakers assigned to it (a
    local speaker not in the table is left out)."""
    local_probs = seg.local_probabilities()  # (chunks, 589, 3)
    per_chunk = np.zeros((len(seg.offsets), CHUNK_FRAMES, max(count, 1)), np.float32)
    for c, j, label in zip(chunk.tolist(), local.tolist(), labels.tolist(), strict=True):
        np.maximum(per_chunk[c, :, label], local_probs[c, :, j], out=per_chunk[c, :, label])
    return _average_over_chunks(seg, per_chunk)


def binarize(activity: np.ndarray, voices: np.ndarray) -> np.ndarray:
    """(frames, k) bool: in each frame, the `voices` most active speakers (at most k)."""
    frames, k = activity.shape
    voices = np.minimum(voices, k)
    order = np.argsort(-activity, axis=1, kind="stable")
    out = np.zeros((frames, k), dtype=bool)
    for rank in range(int(voices.max(initial=0))):
        on = np.flatnonzero(voices > rank)
        out[on, order[on, rank]] = True
    return out


def frames_to_turns(
    binary: np.ndarray, names: list[str], bridge_gap: float = BRIDGE_GAP_S, min_turn: float = MIN_TURN_S
) -> list[SpeakerTurn]:
    """Turns of each speaker from its active frames (a frame stands for its step around its centre);
    one speaker's turns less than `bridge_gap` apart join, turns shorter than `min_turn` go."""
    step = FRAME_SAMPLES / SAMPLE_RATE
    centre = 991 / 2 / SAMPLE_RATE  # the middle of frame 0's receptive field
    turns: list[SpeakerTurn] = []
    for k, name in enumerate(names):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], binary[:, k].astype(np.int8), [0]])))
        spans: list[list[float]] = []
        for first, last in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            start = max(0.0, first * step + centre - step / 2)
            end = last * step + centre - step / 2
            if spans and start - spans[-1][1] < bridge_gap:
                spans[-1][1] = end
            else:
                spans.append([start, end])
        turns.extend(SpeakerTurn(float(a), float(b), name) for a, b in spans if b - a >= min_turn)
    return sorted(turns, key=lambda t: (t.start, t.speaker))
