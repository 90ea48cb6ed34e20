"""Decode any audio or video container PyAV reads to 16 kHz mono float32, once per file.

Every later stage works on the array this returns; nothing re-reads the file. Problems come back as
DecodeError with a one-line reason an operator can act on. Of a two-channel source the levels of
each channel are kept too (engine/channels.py), for the diarizer to tell a recording with one party
per channel. A file with several audio streams is heard as engine/audio_streams.py decides: one
version of a programme, or all the tracks of one recording summed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import av
import numpy as np

from voxdock.engine.audio_streams import (
    Clock,
    MixedTracks,
    NoAudio,
    end_sample,
    ffmpeg_reason,
    frame_time,
    mix_tracks,
    streams_to_hear,
)
from voxdock.engine.channel_mix import ChannelMix, Converter, mix_for
from voxdock.engine.channels import ChannelLevels

SAMPLE_RATE = 16000
# A stream that decodes to less than this share of the length its container declares is truncated.
TRUNCATION_RATIO = 0.9
PREALLOCATE_MAX_S = 12 * 3600.0  # 2.8 GB of samples
# A two-channel source whose channels correlate at or below this over its first `POLARITY_PROBE_S`
# is one signal with a channel wired in opposite polarity: mixed as L + R it cancels (to silence
# where the two are equal), so it is heard as L - R instead. Recordings of one scene by two
# microphones correlate positively or not at all.
OPPOSITE_POLARITY_CORRELATION = -0.5
POLARITY_PROBE_S = 60.0
LEAD_IN_MIN_S = 0.05  # a later start than this is kept as silence before the audio (`lead_in`)
GAPS_NOTED_S = 1.0  # pauses without packets kept as silence are said in the file's note from this much

logging.getLogger("libav").setLevel(logging.ERROR)


class DecodeError(Exception):
    """The file cannot be turned into audio; str() is the reason, without the path."""


class SampleBuffer:
    """Decoded samples written into one array sized from the length the container declares (grown
    when it says too little). A list of per-frame arrays joined at the end held the audio twice at the
    peak and left about its size behind in the C heap, in thousands of small blocks."""

    def __init__(self, expected_seconds: float | None) -> None:
        # A header's length is not trusted past PREALLOCATE_MAX_S (a corrupt one can claim years): a
        # longer file grows the array as it decodes.
        declared = min(max(expected_seconds or 60.0, 0.0), PREALLOCATE_MAX_S)
        expected = int(declared * SAMPLE_RATE * 1.01) + SAMPLE_RATE
        self._buffer = np.empty(expected, dtype=np.float32)
        self.count = 0
        self.finite = True

    def add(self, chunk: np.ndarray) -> None:
        self.reserve(chunk.shape[0])[:] = chunk
        self.finite = self.finite and bool(np.isfinite(chunk).all())

    def reserve(self, count: int) -> np.ndarray:
        """The next `count` samples' place, to be filled by the caller (grown as `add` grows)."""
        end = self.count + count
        if end > self._buffer.shape[0]:
            grown = np.empty(max(end, 2 * self._buffer.shape[0]), dtype=np.float32)
            grown[: self.count] = self._buffer[: self.count]
            self._buffer = grown
        place = self._buffer[self.count : end]
        self.count = end
        return place

    def array(self) -> np.ndarray:
        if self.count < 0.9 * self._buffer.shape[0]:  # the container overstated: keep only what is used
            return self._buffer[: self.count].copy()
        return self._buffer[: self.count]


def _return_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc keeps them otherwise)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, 16 kHz
    source_rate: int
    source_channels: int
    codec: str
    container: str
    # (channels, 10 ms frames) dBFS of a source of 2-8 channels, or of the tracks of a file of 2-8
    channel_levels: np.ndarray | None = None
    opposite_polarity: bool = False  # mixed as (L - R) / sqrt 2: the channels cancel as L + R
    streams_note: str = ""  # which of several audio streams were heard (engine/audio_streams.py)

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / SAMPLE_RATE


def _declared_seconds(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _truncated(declared: float | None, got: float, start_s: float) -> bool:
    """Whether `got` seconds decoded fall short of the `declared` length. Headers count that length
    from 0 (Matroska, Ogg) or from the audio's start (MPEG-TS, whose clock starts anywhere): audio
    starting `start_s` in is measured both ways, and is truncated only when short of both (audio
    starting 5 s into a 15 s Matroska file is 10 s long, and was failed as truncated)."""
    if not declared or declared <= 1.0 or got >= TRUNCATION_RATIO * declared:
        return False
    later = declared - start_s
    return not (start_s > 0 and later > 0 and got >= TRUNCATION_RATIO * later)


def _wav_shortfall(file: Path, size: int) -> tuple[int, int] | None:
    """(declared, present) data bytes of a RIFF/WAVE file whose data chunk runs past the end.

    FFmpeg trusts the file size over the header, so a cut-off WAV would otherwise decode silently short.
    """
    with file.open("rb") as handle:
        head = handle.read(64 * 1024)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    order: Literal["little", "big"] = "little" if head[:4] == b"RIFF" else "big"
    offset = 12
    while offset + 8 <= len(head):
        chunk_id, chunk_size = head[offset : offset + 4], int.from_bytes(head[offset + 4 : offset + 8], order)
        if chunk_id == b"data":
            if chunk_size in (0, 0xFFFFFFFF):  # written by a streamer that never went back to fill it in
                return None
            present = size - (offset + 8)
            return (chunk_size, present) if present < chunk_size else None
        offset += 8 + chunk_size + (chunk_size & 1)
    return None


class SampleSink(Protocol):
    """Where decoded chunks go: kept in one array (`SampleBuffer`), or sent on (engine/decode_process.py)."""

    count: int
    finite: bool

    def add(self, chunk: np.ndarray) -> None: ...


@dataclass(frozen=True)
class SourceInfo:
    """What the file says of its audio track."""

    source_rate: int
    source_channels: int
    codec: str
    container: str
    # (channels, 10 ms frames) dBFS of a source of 2-8 channels, or of the tracks of a file of 2-8
    channel_levels: np.ndarray | None = None
    opposite_polarity: bool = False  # mixed as (L - R) / sqrt 2: the channels cancel as L + R
    streams_note: str = ""  # which of several audio streams were heard (engine/audio_streams.py)


def decode_file(path: str | Path) -> DecodedAudio:
    """Read `path` and return its audio (the streams `streams_to_hear` picks) as 16 kHz mono float32
    samples."""
    kept: list[SampleBuffer] = []

    def keep(declared: float | None) -> SampleBuffer:
        kept.append(SampleBuffer(declared))
        return kept[0]

    info = decode_into(path, keep)
    samples = kept[0].array()
    kept.clear()
    _return_freed_memory()
    np.clip(samples, -1.0, 1.0, out=samples)
    return audio_of(samples, info)


def audio_of(samples: np.ndarray, info: SourceInfo) -> DecodedAudio:
    return DecodedAudio(
        samples,
        info.source_rate,
        info.source_channels,
        info.codec,
        info.container,
        info.channel_levels,
        info.opposite_polarity,
        info.streams_note,
    )


def decode_into(path: str | Path, sink_for: Callable[[float | None], SampleSink]) -> SourceInfo:
    """Decode `path`'s audio (the streams `streams_to_hear` picks) into the sink that
    `sink_for(declared seconds)` makes, chunk by chunk (16 kHz mono float32, not yet clipped);
    DecodeError with the reason when the file cannot be read, breaks off, or holds nothing usable
    (checked once every chunk has been given)."""
    container = _open(Path(path))
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams})
            what = f"only {', '.join(kinds)} streams" if kinds else "no streams"
            raise DecodeError(f"no audio track ({what})")
        choice = streams_to_hear(list(container.streams.audio))
        stream = choice.streams[0]
        codec = stream.codec_context.name if stream.codec_context else "?"
        rate = int(stream.rate or 0)
        channels = int(stream.channels or 0)
        declared = max((_declared_seconds(container, s) or 0.0 for s in choice.streams), default=0.0) or None
        decoded = sink_for(declared)
        note = choice.note
        if len(choice.streams) > 1:
            mixed = _decode_tracks(container, Path(path), choice.streams, decoded)
            note = "; ".join(part for part in (note, mixed.note) if part)
            levels, opposite, start_s, gaps_s = mixed.levels, False, mixed.start_s, mixed.gaps_s
        else:
            if stream.codec_context is not None:
                stream.codec_context.thread_type = "AUTO"
            opposite = channels == 2 and _opposite_polarity(Path(path), stream.index)
            levels, start_s, gaps_s = _decode_stream(container, stream, decoded, opposite)
        if gaps_s >= GAPS_NOTED_S:
            note = "; ".join(
                part for part in (note, f"pauses without packets kept as silence ({gaps_s:.1f} s)") if part
            )
        container_name = container.format.name if container.format else "?"
    # A pause without packets is not a cut: only an end that is missing makes the file truncated.
    got = decoded.count / SAMPLE_RATE
    if got == 0:
        raise DecodeError("the audio track holds no decodable audio (truncated or corrupt)")
    if _truncated(declared, got, start_s):
        raise DecodeError(f"truncated: the header says {declared:.1f} s but only {got:.1f} s decodes")
    if not decoded.finite:
        raise DecodeError("decoded audio contains NaN or infinite samples")
    return SourceInfo(rate, channels, codec, container_name, levels, opposite, note)


def lead_in(container: av.container.InputContainer, first_s: float) -> float:
    """Seconds of silence to put before audio whose first frame is at `first_s`: how much later than
    the container's start it begins (a video whose sound starts after its picture), so that transcript
    times, and the subtitles made from them, are the video's. 0 below `LEAD_IN_MIN_S`, and when it
    would run past the container's declared end (a broken timestamp)."""
    lead = first_s - (container.start_time or 0) / av.time_base
    end = container.duration / av.time_base if container.duration is not None else 0.0
    return lead if LEAD_IN_MIN_S <= lead < end else 0.0


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    decoded: SampleSink,
    opposite: bool,
) -> tuple[np.ndarray | None, float, float]:
    """Decode one stream into `decoded`, after the silence before it (`lead_in`): (channels, frames)
    levels of one of 2-8 channels (else None), its first frame's time, and the seconds of silence put where
    its timestamps jump ahead (`Clock`: a pause without packets, such as a muted participant of a
    WebRTC recording, was run together with what came after and, past a tenth of the file, failed as
    truncated)."""
    mix = _DifferenceMix() if opposite else mix_for(stream)
    # Each channel's level too: of two, at the source's own rate (converted to planar floats, not
    # resampled; the mono samples stay FFmpeg's mix unless the channels cancel in it); of more, from
    # the 16 kHz channels `ChannelMix` mixes.
    levels = _Levels() if int(stream.channels or 0) == 2 else None
    many = mix if isinstance(mix, ChannelMix) else None
    start_s: float | None = None
    clock: Clock | None = None
    gaps = 0

    def silence(samples: int, rate: int) -> None:
        decoded.add(np.zeros(samples, np.float32))
        if levels is not None:
            levels.add_silence(samples / SAMPLE_RATE, rate)
        if many is not None:
            many.add_silence(samples)

    try:
        for frame in container.decode(stream):
            if clock is None:
                start_s = frame_time(frame) or 0.0
                lead = lead_in(container, start_s)
                clock = Clock(start_s - lead, end_sample(_container_end(container), start_s - lead))
                if lead:
                    silence(round(lead * SAMPLE_RATE), frame.sample_rate)
            else:
                place = clock.place(frame_time(frame), decoded.count)
                if place > decoded.count:
                    gaps += place - decoded.count
                    silence(place - decoded.count, frame.sample_rate)
            for chunk in mix.resample(frame):
                decoded.add(chunk)
            if levels is not None:
                levels.add(frame)
        for chunk in mix.resample(None):
            decoded.add(chunk)
    except (av.error.FFmpegError, ValueError) as exc:  # ValueError: PyAV's, on frames it cannot take
        raise _corrupt(decoded, exc) from None
    kept = levels.levels() if levels is not None else many.levels() if many is not None else None
    return kept, start_s or 0.0, gaps / SAMPLE_RATE


def _container_end(container: av.container.InputContainer) -> float | None:
    """The container's end on its streams' clock (seconds), or None when it gives no length."""
    if container.duration is None:
        return None
    return ((container.start_time or 0) + container.duration) / av.time_base


def _decode_tracks(
    container: av.container.InputContainer,
    path: Path,
    streams: tuple[av.audio.stream.AudioStream, ...],
    decoded: SampleSink,
) -> MixedTracks:
    """Decode several streams, tracks of one recording, into `decoded` summed (audio_streams.py),
    after the silence before the first (`lead_in`)."""
    try:
        return mix_tracks(
            path, streams, decoded.add, lambda first_s: lead_in(container, first_s), _container_end(container)
        )
    except NoAudio as exc:
        raise DecodeError(f"no audio track decodes: {exc}") from None


def _corrupt(decoded: SampleSink, exc: Exception) -> DecodeError:
    where = f"{decoded.count / SAMPLE_RATE:.1f} s"
    return DecodeError(f"corrupt or truncated after {where}: {ffmpeg_reason(exc)}")


class _DifferenceMix:
    """16 kHz mono chunks of a stereo source as (L - R) / sqrt 2, at FFmpeg's mix's scale."""

    def __init__(self) -> None:
        self._resampler = Converter("fltp", "stereo", SAMPLE_RATE)

    def resample(self, frame: av.AudioFrame | None) -> list[np.ndarray]:
        chunks = []
        for out in self._resampler.resample(frame):
            planes = out.to_ndarray()
            chunks.append(((planes[0] - planes[1]) * np.float32(np.sqrt(0.5))).astype(np.float32))
        return chunks


def _opposite_polarity(file: Path, stream_index: int) -> bool:
    """Whether the two channels of `file`'s audio stream `stream_index` are one signal in opposite
    polarity: correlation at most `OPPOSITE_POLARITY_CORRELATION` over the first `POLARITY_PROBE_S` seconds
    (read by a container of its own, so the decode proper starts from the beginning)."""
    sums = np.zeros(5)  # L, R, LL, RR, LR
    count, seen = 0, 0.0
    try:
        with av.open(str(file), mode="r", metadata_errors="ignore") as probe:
            stream = next(s for s in probe.streams.audio if s.index == stream_index)
            converter = av.AudioResampler(format="fltp", layout="stereo", rate=stream.rate or None)
            for frame in probe.decode(stream):
                for out in converter.resample(frame):
                    left, right = out.to_ndarray().astype(np.float64)
                    sums += (left.sum(), right.sum(), left @ left, right @ right, left @ right)
                    count += left.shape[0]
                    seen += left.shape[0] / out.sample_rate
                if seen >= POLARITY_PROBE_S:
                    break
    except Exception:  # only advice: the decode proper reports what is wrong with the file
        return False
    if count == 0:
        return False
    # Pearson's correlation: a DC offset of opposite sign on each channel is not opposite polarity.
    mean_l, mean_r = sums[0] / count, sums[1] / count
    var_l, var_r = sums[2] / count - mean_l**2, sums[3] / count - mean_r**2
    scale = float(np.sqrt(max(var_l, 0.0) * max(var_r, 0.0)))
    covariance = float(sums[4] / count - mean_l * mean_r)
    return scale > 0 and covariance / scale <= OPPOSITE_POLARITY_CORRELATION


class _Levels:
    """The channels' levels of decoded frames (`ChannelLevels` at the rate of the first frame)."""

    def __init__(self) -> None:
        self._converter: Converter | None = None
        self._levels: ChannelLevels | None = None

    def add(self, frame: av.AudioFrame) -> None:
        self._start(frame.sample_rate)
        assert self._converter is not None and self._levels is not None
        for out in self._converter.resample(frame):
            self._levels.add(out.to_ndarray())

    def add_silence(self, seconds: float, rate: int) -> None:
        self._start(rate)
        assert self._levels is not None
        self._levels.add(np.zeros((2, round(seconds * self._levels.rate)), np.float32))

    def _start(self, rate: int) -> None:
        if self._converter is None:
            self._converter = Converter("fltp", "stereo", rate)
            self._levels = ChannelLevels(rate)

    def levels(self) -> np.ndarray | None:
        if self._converter is None or self._levels is None:
            return None
        for out in self._converter.resample(None):
            self._levels.add(out.to_ndarray())
        return self._levels.levels()


def _open(file: Path) -> av.container.InputContainer:
    """The file opened as media, after the checks that give a clearer reason than FFmpeg would."""
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except OSError as exc:
        raise DecodeError(f"cannot read: {exc.strerror or exc}") from None
    if file.is_dir():
        raise DecodeError("is a directory")
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        shortfall = _wav_shortfall(file, size)
    except PermissionError:
        raise DecodeError("permission denied") from None
    except OSError as exc:
        raise DecodeError(f"cannot read: {exc.strerror or exc}") from None
    if shortfall is not None:
        declared_bytes, present_bytes = shortfall
        raise DecodeError(
            f"truncated WAV: the header declares {declared_bytes:,} bytes of audio but only "
            f"{max(present_bytes, 0):,} are present"
        )
    try:
        return av.open(str(file), mode="r", metadata_errors="ignore")
    except PermissionError:
        raise DecodeError("permission denied") from None
    except av.error.InvalidDataError:
        raise DecodeError("not an audio or video file (no container format recognised)") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise DecodeError(f"cannot open as media: {ffmpeg_reason(exc)}") from None
