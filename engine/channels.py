"""Which channel of a two-channel recording each moment's speech comes from.

Calls and interviews are often recorded with one party per channel: a call centre's stereo
recordings, a podcast's or a remote interview's two microphones. Mixed down to mono, as every stage
hears the audio, that separation is lost and the diarizer must tell the parties apart by their voices
alone, which fails where voices are alike or a telephone line makes them so. So the decoder keeps
each channel's level per 10 ms frame (`ChannelLevels`: 9 MB for three hours), and `speaking_sides`
says, frame by frame, which channel is speaking where one clearly dominates. The diarizer never gives
one speaker speech from both sides.

A recording counts as split only when each channel dominates a fair share of the loud frames: a mono
recording stored as stereo (equal channels), a panned mix (one constant offset) or a stereo pair of
room microphones (a few dB apart) are not split, and are diarized by voice as before.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
LEVEL_FRAME_SAMPLES = 160  # 10 ms
# A frame belongs to a channel when it is this much louder there than in the other: crosstalk between
# two headsets or the two legs of a call is 20 dB or more down, two room microphones differ by a few dB.
DOMINANCE_DB = 10.0
# Loud frames: within this much of the recording's loud level (its 95th percentile), and above the
# absolute floor; quieter ones are pauses and line noise, whose balance says nothing about a speaker.
LOUD_RANGE_DB = 35.0
FLOOR_DBFS = -65.0
# Split when each channel dominates at least this share of the loud frames, and this much time.
MIN_SIDE_SHARE = 0.05
MIN_SIDE_S = 2.0
SILENT_DB = -120.0
MEASURE_SAMPLES = 16000 * 5  # gathered before measuring (see ChannelLevels)


class ChannelLevels:
    """Each channel's level (dBFS) per 10 ms frame of 16 kHz two-channel audio added in chunks of
    any length (a frame may straddle two chunks). Chunks are gathered and measured a few seconds at
    a time: a decoder's chunks are a few hundred samples, and numpy's cost per call would dominate."""

    def __init__(self) -> None:
        self._energy: list[np.ndarray] = []
        self._pending: list[np.ndarray] = [np.zeros((2, 0), np.float32)]
        self._pending_samples = 0

    def add(self, chunk: np.ndarray) -> None:
        """A (2, n) float chunk."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(2, -1)
        self._pending.append(chunk)
        self._pending_samples += chunk.shape[1]
        if self._pending_samples >= MEASURE_SAMPLES:
            self._measure()

    def _measure(self) -> None:
        data = np.concatenate(self._pending, axis=1)
        whole = data.shape[1] // LEVEL_FRAME_SAMPLES * LEVEL_FRAME_SAMPLES
        if whole:
            frames = data[:, :whole].reshape(2, -1, LEVEL_FRAME_SAMPLES).astype(np.float64)
            self._energy.append(np.mean(frames**2, axis=-1))
        self._pending = [data[:, whole:]]
        self._pending_samples = data.shape[1] - whole

    def levels(self) -> np.ndarray:
        """(2, frames) float32 dBFS, the last partial frame included."""
        self._measure()
        parts = list(self._energy)
        rest = self._pending[0].astype(np.float64)
        if rest.shape[1]:
            parts.append(np.mean(rest**2, axis=-1, keepdims=True))
        if not parts:
            return np.zeros((2, 0), np.float32)
        energy = np.concatenate(parts, axis=1)
        return (10.0 * np.log10(np.maximum(energy, 10 ** (SILENT_DB / 10)))).astype(np.float32)


def levels_of(stereo: np.ndarray) -> np.ndarray:
    """(2, frames) levels of a whole (2, n) 16 kHz recording."""
    levels = ChannelLevels()
    levels.add(stereo)
    return levels.levels()


def speaking_sides(levels: np.ndarray) -> np.ndarray | None:
    """(frames,) int8 per 10 ms frame: +1 where the first channel dominates a loud frame, -1 where the
    second does, 0 elsewhere; None when the recording is not split by channel (see the module)."""
    levels = np.asarray(levels, dtype=np.float32)
    if levels.ndim != 2 or levels.shape[0] != 2 or levels.shape[1] == 0:
        return None
    loudest = levels.max(axis=0)
    loud = (loudest > FLOOR_DBFS) & (loudest > np.percentile(loudest, 95) - LOUD_RANGE_DB)
    balance = levels[0] - levels[1]
    sides = np.zeros(levels.shape[1], np.int8)
    sides[loud & (balance >= DOMINANCE_DB)] = 1
    sides[loud & (balance <= -DOMINANCE_DB)] = -1
    needed = max(MIN_SIDE_SHARE * int(loud.sum()), MIN_SIDE_S * SAMPLE_RATE / LEVEL_FRAME_SAMPLES)
    if min(int((sides == 1).sum()), int((sides == -1).sum())) < needed:
        return None
    return sides


def sides_on_grid(sides: np.ndarray, num_frames: int, frame_samples: int) -> np.ndarray:
    """`sides` (10 ms frames) on another frame grid of `frame_samples` per frame: each frame takes the
    side of the 10 ms frame at its centre."""
    centres = (np.arange(num_frames) * frame_samples + frame_samples // 2) // LEVEL_FRAME_SAMPLES
    out = np.zeros(num_frames, np.int8)
    inside = centres < sides.shape[0]
    out[inside] = sides[centres[inside]]
    return out
