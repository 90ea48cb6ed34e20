"""Microphones mixed to one as a broadcast automixer mixes them.

A field recorder's lavalier per person, a podcast's track per microphone: summed evenly, every
microphone's noise and the talker's late crosstalk on the others come with every word. `AutoMix`
shares gain instead (after Dugan): each channel's gain is the square root of its share of the
channels' power above their own noise floors, so whoever talks is heard at their own microphone's
level and the others are turned down; several talking at once are each heard by their share; where
nobody talks, all are heard alike, as an even sum hears them (the gains' squares always sum to 1).

Power is followed per sample (`TIME_CONSTANT_S`), noise floors and gains every 5 ms: a frame's
gain is reached by a ramp over the frame after it (so the mix is the same however the audio is
chunked). A channel's floor follows its power down at once and up by `FLOOR_RISE_DB_S`
(so a channel of constant noise, a scratch microphone or a hum, stays at its floor and wins no
share), and only power `FLOOR_MARGIN_DB` above it counts.

Measured (bench/channel_mix_eval.py: nine real conversations of three and four people, a lavalier
each in a six-channel WAV, noise on every channel; tiny.en's words against its words on the clean
conversation), summed evenly / by power share without floors / automixed: crosstalk 26 dB down
8.1 / 6.6 / 5.7 %; 15 dB down 9.6 / 6.7 / 6.8 %; noise at -45 dBFS 21.7 / 14.3 / 13.9 %; with a
sixth channel of steady room noise at -40 dBFS (a scratch microphone) 18.2 / 14.4 / 8.6 %.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

from voxdock.engine.channels import SAMPLE_RATE

# A syllable's onset takes its microphone up within a few milliseconds; on one conversation words
# differed as little at 5 to 50 ms, more at 200 ms.
TIME_CONSTANT_S = 0.05
# Noise floors and gains every 5 ms: a frame's gain is reached a frame late, and at 10 ms the
# onsets of a talker's syllables came through 1.2 dB noisier (tests/test_channel_mix.py's four
# microphones: 33.3 dB against 34.5 dB signal to noise).
FRAME = SAMPLE_RATE // 200
FLOOR_RISE_DB_S = 5.0  # a floor follows a channel's power down at once, up this fast
# The power the smoothing gives is too low at first (it starts from nothing): floors start after
# this many samples, and the gains are even before them.
WARM_UP = round(3 * TIME_CONSTANT_S * SAMPLE_RATE / FRAME) * FRAME
FLOOR_MARGIN_DB = 3.0
# Power every channel holds in the shares whatever it does (-80 dBFS): where nobody is above their
# floor, the shares are even.
SHARE_FLOOR_POWER = 1e-8
SILENT_DB = -120.0


class AutoMix:
    """(channels, n) chunks, given in order, mixed to (n,) float32 (see the module)."""

    def __init__(self, channels: int) -> None:
        decay = math.exp(-1.0 / (TIME_CONSTANT_S * SAMPLE_RATE))
        self._b = np.array([1.0 - decay])
        self._a = np.array([1.0, -decay])
        self._power_state = np.zeros((channels, 1))
        self._floor_db: np.ndarray | None = None  # at the last frame, per channel
        even = np.full(channels, 1.0 / math.sqrt(max(1, channels)))
        self._ramp = np.stack([even, even], axis=1)  # the last two frames' gains: the ramp under way
        self._seen = 0  # samples mixed so far

    def mix(self, planes: np.ndarray) -> np.ndarray:
        """(n,) float32: the (channels, n) samples that follow those given before, mixed."""
        samples = np.asarray(planes, dtype=np.float64)
        n = samples.shape[1]
        power, self._power_state = lfilter(self._b, self._a, samples**2, axis=1, zi=self._power_state)
        first = -self._seen % FRAME  # this chunk's first frame start
        frames = np.arange(first, n, FRAME)
        # Frame k's gain is reached at its end, from frame k - 1's at its start.
        values = self._ramp
        warm = frames[self._seen + frames >= WARM_UP]
        if frames.size:
            even = np.repeat(self._ramp[:, :1], frames.size - warm.size, axis=1)  # still warming up
            values = np.concatenate([values, even, self._frame_gains(power[:, warm])], axis=1)
            self._ramp = values[:, -2:]
        where = np.concatenate([[first - FRAME, first], frames + FRAME]).astype(np.float64)
        at = np.arange(n, dtype=np.float64)
        gains = np.stack([np.interp(at, where, row) for row in values])
        self._seen += n
        return (gains * samples).sum(axis=0).astype(np.float32)

    def _frame_gains(self, power: np.ndarray) -> np.ndarray:
        """(channels, frames) gains from the channels' power at successive frames."""
        if power.shape[1] == 0:
            return power
        level = 10.0 * np.log10(np.maximum(power, 10 ** (SILENT_DB / 10)))
        floor = self._follow_floors(level)
        excess = np.maximum(power - 10 ** ((floor + FLOOR_MARGIN_DB) / 10), 0.0)
        share = (excess + SHARE_FLOOR_POWER) / (excess.sum(axis=0) + SHARE_FLOOR_POWER * power.shape[0])
        return np.sqrt(share)

    def _follow_floors(self, level: np.ndarray) -> np.ndarray:
        """(channels, frames) noise floors in dB: floor[t] = min(level[t], floor[t - 1] + rise), as
        a running minimum of level[s] + rise * (t - s), the floor before these frames included."""
        rise = FLOOR_RISE_DB_S * FRAME / SAMPLE_RATE
        before = level[:, 0] - rise if self._floor_db is None else self._floor_db
        steps = np.arange(level.shape[1]) * rise
        lowest = np.minimum.accumulate(level - steps, axis=1)
        floor = steps + np.minimum(lowest, (before + rise)[:, None])
        self._floor_db = floor[:, -1]
        return floor
