"""Which channel of a recording split by channel (engine/channels.py) each frame, unit and speaker
of the diarizer was heard on (its side: channel k's is k + 1, 0 where unclear), and what follows from
it: no speaker holds speech of two sides (clustering.py), and where one side speaks the other sides'
speakers are not active.
"""

from __future__ import annotations

import numpy as np

from voxdock.engine.channels import MIN_SIDE_S, sides_on_grid, speaking_sides
from voxdock.engine.diarization.clustering import agreed_side, groups_by, opposite
from voxdock.engine.diarization.embedding import LocalSpeakers
from voxdock.engine.diarization.segmentation import (
    CHUNK_FRAMES,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    ChunkSegmentation,
)


def speech_sides(levels: np.ndarray, voices: np.ndarray) -> np.ndarray | None:
    """(file frames,) the side speaking in each frame of a recording split by channel, from the
    source's channel levels: only sides that hold `MIN_SIDE_S` of the speech heard, and None unless
    two do (a stereo lecture with the room on the other channel is not two parties)."""
    sides = speaking_sides(levels)
    if sides is None:
        return None
    grid = sides_on_grid(sides, voices.shape[0], FRAME_SAMPLES) * (voices > 0)
    frame_s = FRAME_SAMPLES / SAMPLE_RATE
    heard = np.bincount(grid, minlength=int(grid.max()) + 1)[1:] * frame_s
    parties = np.flatnonzero(heard >= MIN_SIDE_S) + 1
    if parties.size < 2:
        return None
    return np.where(np.isin(grid, parties), grid, 0).astype(np.int8)


def silence_other_side(
    activity: np.ndarray, sides: np.ndarray, speaker_sides: np.ndarray, voices: np.ndarray
) -> None:
    """Where one channel of a split recording speaks, the speakers of the other channel are not
    active (in place): a local speaker's track often holds both parties of a quick exchange, and its
    activity would otherwise give one party's words to the other. Frames where two voices are heard
    are left alone (a quiet backchannel from the other side is still someone talking), and so is a
    frame that would be left with nobody."""
    other = opposite(np.where(voices < 2, sides, 0)[:, None], speaker_sides[None, :])
    keep = (other | (activity <= 0)).all(axis=1)
    other[keep] = False
    activity[other] = 0.0


UNIT_SIDE_MIN_FRAMES = round(0.3 * SAMPLE_RATE / FRAME_SAMPLES)  # a unit's sided speech, at least


def unit_sides(seg: ChunkSegmentation, units: LocalSpeakers, sides: np.ndarray) -> np.ndarray:
    """(units,) int8: the side each unit's speech was heard on (`agreed_side` of its frames), 0 where
    unclear or too little of it is sided."""
    frames = np.zeros((len(units), int(sides.max(initial=0))), np.int64)  # per unit, frames of each side
    padded = np.concatenate([sides, np.zeros(CHUNK_FRAMES, np.int8)])
    for group in groups_by(units.chunk):
        chunk = int(units.chunk[group[0]])
        active = seg.local_activity([chunk])[0]
        heard = padded[int(seg.offsets[chunk]) : int(seg.offsets[chunk]) + CHUNK_FRAMES]
        for i in group.tolist():
            a, b = int(units.first[i]), int(units.last[i])
            on = heard[a:b][active[a:b, int(units.local[i])]]
            frames[i] = np.bincount(on, minlength=frames.shape[1] + 1)[1:]
    return np.where(frames.sum(axis=1) >= UNIT_SIDE_MIN_FRAMES, agreed_side(frames), 0).astype(np.int8)
