"""Which channel of a recording each moment's speech comes from.

Calls and interviews are often recorded with one party per channel: a call centre's stereo
recordings, a podcast's or a remote interview's two microphones, a field recorder's lavalier per
person. Mixed down to mono, as every stage hears the audio, that separation is lost and the diarizer
must tell the parties apart by their voices alone, which fails where voices are alike or a telephone
line makes them so. So the decoder keeps each channel's level per 10 ms frame (`ChannelLevels`: 4.3
MB a channel for three hours), and `speaking_sides` says, frame by frame, which channel is speaking
where one clearly dominates all the others. The diarizer never gives one speaker speech from two
sides.

A recording counts as split only when two channels or more each dominate a fair share of the loud
frames (the sides; a channel that never does, an unused input or a room microphone, is nobody's
side): a mono recording stored as stereo (equal channels), a panned mix (one constant offset), a
stereo pair of room microphones (a few dB apart) or a film's surround channels (the dialogue in the
centre) are not split, and are diarized by voice as before.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
LEVEL_FRAMES_PER_S = 100
LEVEL_FRAME_SAMPLES = SAMPLE_RATE // LEVEL_FRAMES_PER_S  # 10 ms at 16 kHz
# A frame belongs to a channel when it is this much louder there than in the other: crosstalk between
# two headsets or the two legs of a call is 20 dB or more down, two room microphones differ by a few dB.
DOMINANCE_DB = 10.0
# Loud frames: within this much of the recording's loud level (its 95th percentile), and above the
# absolute floor; quieter ones are pauses and line noise, whose balance says nothing about a speaker.
LOUD_RANGE_DB = 35.0
FLOOR_DBFS = -65.0
# A channel is a side when it dominates at least this share of the loud frames, and this much time: a
# person with 3 s of speech on a microphone of their own dominates it about 1.6 s, 4 % of the loud
# frames of a conversation of four (the bench's `per person` layout), and at 5 % and 2.0 s was
# nobody's side (bench/split_channel_eval.py: its controls are still not taken for split).
MIN_SIDE_SHARE = 0.02
MIN_SIDE_S = 1.0
SILENT_DB = -120.0
# Not split when one channel's level envelope is the other's, at some lag up to 5 s, this closely
# (correlation): measured on 79 s of the real recordings, a copy 0-800 ms late at 0 or -6 dB scored
# 0.96-1.00; the real call and six real-voice conversations split by channel, wideband or over a
# telephone line, 0.00-0.69, the highest with crosstalk only 12 dB down (tests/test_channels.py).
COPY_LIKENESS = 0.9
COPY_LAG_S = 5.0
MEASURE_S = 5  # seconds of audio gathered before measuring (see ChannelLevels)
MAX_SIDES = 8  # channels or tracks whose levels are kept, at most


class ChannelLevels:
    """Each channel's level (dBFS) per 10 ms frame of `channels`-channel audio at `rate` Hz, added in
    chunks of any length (a frame may straddle two chunks; at a rate that is not a multiple of 100 Hz
    the frames are a sample longer or shorter, so that frame k always starts at sample k * rate /
    100). The decoder measures two channels at the source's own rate (a second resampler to 16 kHz
    cost more CPU than the decoding), more from the 16 kHz channels it mixes (engine/channel_mix.py).
    Chunks are gathered and measured a few seconds at a time: a decoder's chunks are a few hundred
    samples, and numpy's cost per call would dominate."""

    def __init__(self, rate: int = SAMPLE_RATE, channels: int = 2) -> None:
        self.rate = int(rate)
        self.channels = int(channels)
        self._energy: list[np.ndarray] = []
        self._pending: list[np.ndarray] = [np.zeros((self.channels, 0), np.float32)]
        self._pending_samples = 0
        self._start = 0  # the first pending sample's index in the whole recording
        self._frames = 0  # frames measured so far

    def add(self, chunk: np.ndarray) -> None:
        """A (channels, n) float chunk."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(self.channels, -1)
        self._pending.append(chunk)
        self._pending_samples += chunk.shape[1]
        if self._pending_samples >= MEASURE_S * self.rate:
            self._measure()

    def _boundary(self, frame: int) -> int:
        return frame * self.rate // LEVEL_FRAMES_PER_S

    def _measure(self) -> None:
        data = np.concatenate(self._pending, axis=1)
        complete = (self._start + data.shape[1]) * LEVEL_FRAMES_PER_S // self.rate
        used = 0
        if complete > self._frames:
            edges = np.array([self._boundary(k) for k in range(self._frames, complete + 1)]) - self._start
            squares = data[:, : edges[-1]].astype(np.float64) ** 2
            self._energy.append(np.add.reduceat(squares, edges[:-1], axis=1) / np.diff(edges))
            self._frames, used = complete, int(edges[-1])
        self._pending = [data[:, used:]]
        self._pending_samples = data.shape[1] - used
        self._start += used

    def levels(self) -> np.ndarray:
        """(channels, frames) float32 dBFS, the last partial frame included."""
        self._measure()
        parts = list(self._energy)
        rest = self._pending[0].astype(np.float64)
        if rest.shape[1]:
            parts.append(np.mean(rest**2, axis=-1, keepdims=True))
        if not parts:
            return np.zeros((self.channels, 0), np.float32)
        energy = np.concatenate(parts, axis=1)
        return (10.0 * np.log10(np.maximum(energy, 10 ** (SILENT_DB / 10)))).astype(np.float32)


def levels_of(channels: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """(channels, frames) levels of a whole (channels, n) recording at `rate` Hz."""
    channels = np.asarray(channels, dtype=np.float32)
    levels = ChannelLevels(rate, channels.shape[0])
    levels.add(channels)
    return levels.levels()


def speaking_sides(levels: np.ndarray) -> np.ndarray | None:
    """(frames,) int8 per 10 ms frame: the side speaking in a loud frame, channel k's side being
    k + 1, where that channel is `DOMINANCE_DB` louder than every other and is a side (it dominates
    a fair share of the loud frames), 0 elsewhere; None when the recording is not split by channel
    (see the module)."""
    levels = np.asarray(levels, dtype=np.float32)
    if levels.ndim != 2 or not 2 <= levels.shape[0] <= MAX_SIDES or levels.shape[1] == 0:
        return None
    ranked = np.sort(levels, axis=0)
    loudest = ranked[-1]
    loud = (loudest > FLOOR_DBFS) & (loudest > np.percentile(loudest, 95) - LOUD_RANGE_DB)
    dominant = loud & (ranked[-1] - ranked[-2] >= DOMINANCE_DB)
    sides = np.where(dominant, np.argmax(levels, axis=0) + 1, 0).astype(np.int8)
    needed = max(MIN_SIDE_SHARE * int(loud.sum()), MIN_SIDE_S * LEVEL_FRAMES_PER_S)
    counts = np.bincount(sides, minlength=levels.shape[0] + 1)[1:]
    parties = np.flatnonzero(counts >= needed)
    if parties.size < 2:
        return None
    floor = float(loudest.max()) - LOUD_RANGE_DB
    for i, a in enumerate(parties.tolist()):
        for b in parties[i + 1 :].tolist():
            if copy_likeness(levels[[a, b]], floor=floor) >= COPY_LIKENESS:
                return None
    sides[~np.isin(sides, parties + 1)] = 0
    return sides


def copy_likeness(levels: np.ndarray, floor: float) -> float:
    """The highest correlation of two channels' level envelopes (`levels`: (2, frames), clipped at
    `floor` dB) at any lag up to `COPY_LAG_S` either way: near 1 when one channel is the other one
    late (two recorders, a spaced microphone pair, a delayed feed), whose syllables would otherwise
    start louder on one side and end louder on the other."""
    from scipy.signal import correlate

    a, b = (np.maximum(row.astype(np.float64), floor) for row in levels)
    a, b = a - a.mean(), b - b.mean()
    scale = float(np.linalg.norm(a) * np.linalg.norm(b))
    if scale == 0.0:
        return 0.0
    lags = int(COPY_LAG_S * LEVEL_FRAMES_PER_S)
    full = correlate(a, b, mode="full", method="fft")
    zero = b.shape[0] - 1
    return float(full[max(0, zero - lags) : zero + lags + 1].max() / scale)


def sides_on_grid(sides: np.ndarray, num_frames: int, frame_samples: int) -> np.ndarray:
    """`sides` (10 ms frames) on another frame grid of `frame_samples` per frame: each frame takes the
    side of the 10 ms frame at its centre."""
    centres = (np.arange(num_frames) * frame_samples + frame_samples // 2) // LEVEL_FRAME_SAMPLES
    out = np.zeros(num_frames, np.int8)
    inside = centres < sides.shape[0]
    out[inside] = sides[centres[inside]]
    return out
