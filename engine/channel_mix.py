"""Sources of three or more channels mixed to one, no channel left out.

FFmpeg's mono mix follows the source's channel layout, and a layout always has a low-frequency
(LFE) channel from three channels up: a file that declares none (a field recorder's or a conference
system's WAV of one microphone per channel) is taken for 2.1, 4.0, 5.1 or 7.1 by its channel count.
So the third channel of a 3-channel WAV, or the fourth of a 6- or 8-channel one, was dropped from
the mix, and the person on that microphone with it: no words, no turns, and no error.

Here every channel is resampled to 16 kHz and mixed:
- a layout that names no channel (one input per channel: a microphone each) as a broadcast
  automixer mixes microphones (engine/automix.py): whoever talks is heard at their own microphone's
  level, and the others' microphones, their noise and the talker's late crosstalk with them, are
  turned down;
- a declared layout (a film's 5.1, whose music must not win over its dialogue) is mixed with weights
  by channel name: it keeps FFmpeg's weights for speech (centre 1, front left and right 1/sqrt 2, the
  rest 1/2), and an LFE channel is kept above `LFE_CUTOFF_HZ` at 1/sqrt 2: a film's LFE carries only
  bass below that, a microphone wired to that channel carries the voice above it.
"""

from __future__ import annotations

from collections.abc import Callable

import av
import numpy as np
from scipy.signal import butter, sosfilt

from voxdock.engine.automix import AutoMix
from voxdock.engine.channels import MAX_SIDES, SAMPLE_RATE, ChannelLevels

LFE_CUTOFF_HZ = 150.0
_LFE_FILTER = butter(4, LFE_CUTOFF_HZ, btype="highpass", fs=SAMPLE_RATE, output="sos")
_HALF_POWER = float(np.sqrt(0.5))
# FFmpeg's weights for a mono mix of a declared layout (measured one channel at a time, 5.1 and 7.1).
_NAMED_WEIGHTS = {"FC": 1.0, "FL": _HALF_POWER, "FR": _HALF_POWER}
_OTHER_WEIGHT = 0.5


class Converter:
    """PyAV's resampler to one output format, set up again when the input's format, layout or rate
    changes mid-stream (a broadcast switching between stereo and 5.1): PyAV's takes its setup from
    the first frame and rejects frames unlike it."""

    def __init__(self, format: str, layout: str | None, rate: int | None) -> None:
        self._setup = (format, layout, rate)
        self._resampler = av.AudioResampler(format=format, layout=layout, rate=rate)

    def resample(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        try:
            return list(self._resampler.resample(frame))
        except ValueError:  # "Frame does not match AudioResampler setup"
            if frame is None:
                raise
            done = list(self._resampler.resample(None))
            format, layout, rate = self._setup
            self._resampler = av.AudioResampler(format=format, layout=layout, rate=rate)
            return done + list(self._resampler.resample(frame))


class MonoMix:
    """16 kHz mono chunks as FFmpeg mixes the channels: (L + R) / sqrt 2 for stereo."""

    def __init__(self) -> None:
        self._resampler = Converter("flt", "mono", SAMPLE_RATE)

    def resample(self, frame: av.AudioFrame | None) -> list[np.ndarray]:
        return [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]


def mix_for(stream: av.audio.stream.AudioStream) -> ChannelMix | MonoMix:
    """The mix for a stream: FFmpeg's for one or two channels, `ChannelMix` for more."""
    context = stream.codec_context  # None for a codec FFmpeg does not know
    return ChannelMix() if context is not None and int(context.channels or 0) > 2 else MonoMix()


def is_lfe(name: str) -> bool:
    return name.startswith("LFE")


def channel_weights(names: list[str]) -> np.ndarray:
    """(channels,) float32 weight of each channel of a declared layout (PyAV's names) in the mono mix."""
    weights = [_HALF_POWER if is_lfe(name) else _NAMED_WEIGHTS.get(name, _OTHER_WEIGHT) for name in names]
    return np.array(weights, np.float32)


class ChannelMix:
    """16 kHz mono chunks of decoded frames of three or more channels (see the module), and each
    channel's level (`ChannelLevels`, from its 16 kHz samples: a recording may hold a party per
    channel) while the stream keeps its channel count and has at most `MAX_SIDES`."""

    def __init__(self) -> None:
        # Every channel at the source's layout, interleaved: PyAV 18 crashes reading 8 planar channels.
        self._resampler = Converter("flt", None, SAMPLE_RATE)
        self._layout = ""
        self._channels = 1
        self._mix: Callable[[np.ndarray], np.ndarray] = lambda planes: planes[0]  # set by _follow
        self._lfe: list[int] = []
        self._state: dict[int, np.ndarray] = {}
        self._levels: ChannelLevels | None = None
        self._measuring = True

    def resample(self, frame: av.AudioFrame | None) -> list[np.ndarray]:
        chunks = []
        for out in self._resampler.resample(frame):
            self._follow(out.layout)
            planes = out.to_ndarray().reshape(-1, self._channels).T.copy()
            for channel in self._lfe:
                planes[channel], self._state[channel] = sosfilt(
                    _LFE_FILTER, planes[channel], zi=self._state[channel]
                )
            self._measure(planes)
            chunks.append(self._mix(planes).astype(np.float32, copy=False))
        return chunks

    def add_silence(self, samples: int) -> None:
        """`samples` of silence put in the mono audio (a pause without packets, a lead-in)."""
        if self._levels is not None and self._measuring:
            self._levels.add(np.zeros((self._levels.channels, samples), np.float32))

    def levels(self) -> np.ndarray | None:
        """(channels, 10 ms frames) dBFS, or None when they were not kept."""
        return self._levels.levels() if self._levels is not None and self._measuring else None

    def _measure(self, planes: np.ndarray) -> None:
        if not self._measuring:
            return
        if self._levels is None:
            self._levels = ChannelLevels(SAMPLE_RATE, planes.shape[0])
        # A stream whose channel count changes midway has no one channel per party throughout.
        self._measuring = planes.shape[0] == self._levels.channels <= MAX_SIDES
        if self._measuring:
            self._levels.add(planes)

    def _follow(self, layout: av.AudioLayout) -> None:
        """The mix and LFE filters for the frames' layout (set again when a stream changes it): an
        automixer where the layout names no channel ('NONE'), weights by name otherwise."""
        if layout.name == self._layout:
            return
        names = [channel.name for channel in layout.channels]
        self._layout = layout.name
        self._channels = len(names)
        if all(name == "NONE" for name in names):
            self._mix = AutoMix(len(names)).mix
        else:
            weights = channel_weights(names)
            self._mix = lambda planes: weights @ planes
        self._lfe = [i for i, name in enumerate(names) if is_lfe(name)]
        self._state = {i: np.zeros((_LFE_FILTER.shape[0], 2)) for i in self._lfe}
