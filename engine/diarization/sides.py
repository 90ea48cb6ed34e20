"""Which channel of a recording split by channel (engine/channels.py) each frame, unit and speaker
of the diarizer was heard on, and what follows from it: no speaker holds speech of both sides
(clustering.py), and where one side speaks the other side's speakers are not active.
"""

from __future__ import annotations

import numpy as np

from voxdock.engine.channels import MIN_SIDE_S, sides_on_grid, speaking_sides
from voxdock.engine.diarization.clustering import agreed_side, groups_by
from voxdock.engine.diarization.embedding import LocalSpeakers
from voxdock.engine.diarization.segmentation import (
    CHUNK_FRAMES,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    ChunkSegmentation,
)


def speech_sides(levels: np.ndarray, voices: np.ndarray) -> np.ndarray | None:
    """(file frames,) the channel speaking in each frame of a recording split by channel, from the
    source's channel levels; None unless each channel holds `MIN_SIDE_S` of the speech heard (a
    stereo lecture with the room on the other channel is not two parties)."""
    sides = speaking_sides(levels)
    if sides is None:
        return None
    grid = sides_on_grid(sides, voices.shape[0], FRAME_SAMPLES) * (voices > 0)
    frame_s = FRAME_SAMPLES / SAMPLE_RATE
    if min(int((grid > 0).sum()), int((grid < 0).sum())) * frame_s < MIN_SIDE_S:
        return None
    return grid.astype(np.int8)


def silence_other_side(
    activity: np.ndarray, sides: np.ndarray, speaker_sides: np.ndarray, voices: np.ndarray
) -> None:
    """Where one channel of a split recording speaks, the speakers of the other channel are not
    active (in place): a local speaker's track often holds both parties of a quick exchange, and its
    activity would otherwise give one party's words to the other. Frames where two voices are heard
    are left alone (a quiet backchannel from the other side is still someone talking), and so is a
    frame that would be left with nobody."""
    opposite = (np.where(voices < 2, sides, 0)[:, None] * speaker_sides[None, :].astype(np.int8)) < 0
    keep = (opposite | (activity <= 0)).all(axis=1)
    opposite[keep] = False
    activity[opposite] = 0.0


UNIT_SIDE_MIN_FRAMES = round(0.3 * SAMPLE_RATE / FRAME_SAMPLES)  # a unit's sided speech, at least


def unit_sides(seg: ChunkSegmentation, units: LocalSpeakers, sides: np.ndarray) -> np.ndarray:
    """(units,) int8: the side each unit's speech was heard on (`agreed_side` of its frames), 0 where
    unclear or too little of it is sided."""
    plus = np.zeros(len(units), np.int64)
    minus = np.zeros(len(units), np.int64)
    padded = np.concatenate([sides, np.zeros(CHUNK_FRAMES, np.int8)])
    for group in groups_by(units.chunk):
        chunk = int(units.chunk[group[0]])
        active = seg.local_activity([chunk])[0]
        heard = padded[int(seg.offsets[chunk]) : int(seg.offsets[chunk]) + CHUNK_FRAMES]
        for i in group.tolist():
            a, b = int(units.first[i]), int(units.last[i])
            on = heard[a:b][active[a:b, int(units.local[i])]]
            plus[i], minus[i] = int((on > 0).sum()), int((on < 0).sum())
    return np.where(plus + minus >= UNIT_SIDE_MIN_FRAMES, agreed_side(plus, minus), 0).astype(np.int8)
