"""Which audio streams of a file are heard, and several streams heard as one recording.

Most files hold one audio stream. Those with several hold one of two things:

- versions of one programme: dubbed languages, a commentary, an audio description. Summed, they
  would talk over each other; the default stream (else the first) is heard, and the note says which.
- tracks of one recording: a multitrack recorder's microphone per person, or a streaming tool's
  (OBS) host microphone and remote guest's desktop audio on tracks of their own. Hearing only the
  first would lose the others' speakers without a word, so the tracks are mixed (each to mono, then
  together as microphones are: engine/automix.py), each placed by its timestamps.
  Each track's level is kept as a source's channels' are (engine/channels.py): where tracks hold a
  party of their own each, the diarizer keeps them apart as it does the two legs of a call.

Streams are versions when their language tags differ, one is marked as a dub, a commentary or a
description (FFmpeg's dispositions), or a title says so (rips often mark a commentary by its title
alone); otherwise tracks.

Each track is read by a container of its own, always the one furthest behind: containers interleave
their streams loosely (a Matroska file written a stream at a time holds minutes of one before the
next), and one demuxer for all would have to hold what runs ahead, or place it wrongly. A track that
cannot be decoded (an unknown codec, corrupt packets) is left out from there on and the note says so;
the file fails only when no track gives any audio.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.stream import Disposition

from voxdock.engine.automix import AutoMix
from voxdock.engine.channel_mix import mix_for
from voxdock.engine.channels import MAX_SIDES, SAMPLE_RATE, ChannelLevels

MAX_TRACKS = 8  # tracks summed at most (the first ones)
VERSION_MARKS = (
    Disposition.dub
    | Disposition.comment
    | Disposition.karaoke
    | Disposition.hearing_impaired
    | Disposition.visual_impaired
    | Disposition.descriptions
)
VERSION_TITLE = re.compile(r"comment|descri|dub|karaoke|narrat", re.IGNORECASE)
UNTAGGED = {"", "und"}
# A stream's next chunk is placed where its timestamp says when that is this much later than where the
# stream has got (`Clock`): a pause without packets stays silence, not the rest moved early. Below it,
# chunks follow each other (a clock a little off its sample count neither opens holes nor drops audio).
GAP_TOLERANCE_S = 0.2
EMIT_SAMPLES = SAMPLE_RATE  # the summed audio goes to the sink a second at a time


@dataclass(frozen=True)
class MixedTracks:
    levels: np.ndarray | None  # (tracks, 10 ms frames) dBFS of each track
    note: str  # the tracks left out and why, and those whose timestamps broke; "" when none
    start_s: float  # the earliest track's first frame's time
    gaps_s: float  # the most silence put in one track where its timestamps jump ahead


class NoAudio(Exception):
    """No track gave any audio; str() is the first track's reason."""


@dataclass(frozen=True)
class StreamChoice:
    streams: tuple[av.audio.stream.AudioStream, ...]  # heard; summed when more than one
    note: str  # what an operator should know of the choice; "" for a file with one audio stream


def _language(stream: av.audio.stream.AudioStream) -> str:
    return str(stream.metadata.get("language", "") or "").strip().lower()


def _described(stream: av.audio.stream.AudioStream) -> str:
    language = _language(stream)
    return f"#{stream.index}" + ("" if language in UNTAGGED else f" {language}")


def _a_version(stream: av.audio.stream.AudioStream) -> bool:
    title = str(stream.metadata.get("title", "") or "")
    return bool(stream.disposition & VERSION_MARKS) or bool(VERSION_TITLE.search(title))


def streams_to_hear(streams: list[av.audio.stream.AudioStream]) -> StreamChoice:
    """The audio streams (in the container's order) to hear, and a note on the choice."""
    if len(streams) <= 1:
        return StreamChoice(tuple(streams), "")
    languages = {_language(s) for s in streams} - UNTAGGED
    if len(languages) > 1 or any(_a_version(s) for s in streams):
        default = [s for s in streams if s.disposition & Disposition.default and not _a_version(s)]
        chosen = default[0] if default else next((s for s in streams if not _a_version(s)), streams[0])
        why = "the default" if default else "the first"
        listed = ", ".join(_described(s) for s in streams)
        note = f"{len(streams)} audio streams, versions of one programme ({listed})"
        return StreamChoice((chosen,), note + f": heard {why}, #{chosen.index}")
    note = f"its {len(streams)} audio streams heard together as tracks of one recording"
    if len(streams) > MAX_TRACKS:
        note += f" (the first {MAX_TRACKS})"
    return StreamChoice(tuple(streams[:MAX_TRACKS]), note)


def frame_time(frame: av.AudioFrame) -> float | None:
    """The frame's start in seconds by its timestamp; None without one."""
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)


class Clock:
    """Where a stream's next samples go by its timestamps: after what it has given, or where its
    time says it comes `GAP_TOLERANCE_S` or more later (a pause without packets: silence). Once a
    time goes back (recordings joined end to end, a clock reset, corrupt packets) or reaches sample
    `limit` (the container's end), its times are no longer followed: its audio follows on, and
    nothing is dropped. Times are seconds on the container's clock; sample 0 is at `origin`."""

    def __init__(self, origin: float, limit: int) -> None:
        self.origin = origin
        self.limit = limit
        self.timed = True

    def place(self, at: float | None, end: int) -> int:
        """The sample a chunk timed `at` (None: untimed) starts at, the stream having got to `end`."""
        if at is None or not self.timed:
            return end
        wanted = round((at - self.origin) * SAMPLE_RATE)
        tolerance = GAP_TOLERANCE_S * SAMPLE_RATE
        if wanted < end - tolerance or wanted >= self.limit:
            self.timed = False
            return end
        return wanted if wanted >= end + tolerance else end


def end_sample(end_s: float | None, origin: float) -> int:
    """`Clock`'s limit: the container's end (seconds, None when unknown: no limit) as a sample."""
    return round((end_s - origin) * SAMPLE_RATE) if end_s is not None else sys.maxsize


def _chunks(path: Path, index: int) -> Generator[tuple[float | None, np.ndarray]]:
    """(start time in seconds or None, 16 kHz mono samples) of each decoded frame of stream `index`,
    read by a container of its own; the resampler's rest last, with no time."""
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        stream = next(s for s in container.streams.audio if s.index == index)
        if stream.codec_context is not None:
            stream.codec_context.thread_type = "AUTO"
        mono = mix_for(stream)
        for frame in container.decode(stream):
            out = mono.resample(frame)
            if out:
                yield frame_time(frame), np.concatenate(out)
        rest = mono.resample(None)
        if rest:
            yield None, np.concatenate(rest)


class _Track:
    """One track's samples on the file's timeline (sample 0: where the summed audio starts): the
    pieces not yet summed, each at its place (a gap between them is silence, never held)."""

    def __init__(self, index: int, chunks: Generator[tuple[float | None, np.ndarray]]) -> None:
        self.index = index
        self._chunks = chunks
        self._pieces: list[tuple[int, np.ndarray]] = []
        self.end = 0  # where its next sample goes
        self.decoded = 0  # samples of audio it gave (the silence of its gaps not counted)
        self.gaps = 0  # samples of silence put where its timestamps jump ahead (not its late start)
        self.done = False
        self.error = ""
        self.clock = Clock(0.0, sys.maxsize)  # set by the mix once the tracks' start is known
        self.ahead: tuple[float | None, np.ndarray] | None = self._next()  # its next chunk, read ahead

    def close(self) -> None:
        self._chunks.close()  # its container with it

    @property
    def going(self) -> bool:
        return not self.done or self.ahead is not None

    def _next(self) -> tuple[float | None, np.ndarray] | None:
        try:
            return next(self._chunks)
        except StopIteration:
            self.done = True
        except (av.error.FFmpegError, ValueError) as exc:  # left out from here; the others go on
            self.done = True
            self.error = ffmpeg_reason(exc)
        return None

    def read(self) -> None:
        """Place its next chunk where its `clock` says."""
        item, self.ahead = self.ahead, None
        if item is None and not self.done:
            item = self._next()
        if item is None:
            return
        at, samples = item
        place = self.clock.place(at, self.end)
        if self.decoded:  # not its late start
            self.gaps += place - self.end
        if samples.shape[0]:
            self._pieces.append((place, samples))
            self.end = place + samples.shape[0]
            self.decoded += samples.shape[0]

    def take(self, start: int, count: int) -> np.ndarray:
        """Its samples from `start` for `count` (silence where it has none), forgetting them."""
        out = np.zeros(count, np.float32)
        kept: list[tuple[int, np.ndarray]] = []
        for place, samples in self._pieces:
            lo, hi = max(place, start), min(place + samples.shape[0], start + count)
            if hi > lo:
                out[lo - start : hi - start] = samples[lo - place : hi - place]
            if place + samples.shape[0] > start + count:
                cut = max(0, start + count - place)
                kept.append((place + cut, samples[cut:]))
        self._pieces = kept
        return out


def mix_tracks(
    path: Path,
    streams: tuple[av.audio.stream.AudioStream, ...],
    emit: Callable[[np.ndarray], None],
    lead_in: Callable[[float], float] = lambda first_s: 0.0,
    end_s: float | None = None,
) -> MixedTracks:
    """Decode the tracks of `path` (its `streams`) mixed into `emit` (`AutoMix`), 16 kHz mono chunks,
    after `lead_in(first frame's time)` seconds of silence; `end_s`: the container's end on the same clock
    as the frames' times (None: unknown), past which no timestamp is followed. NoAudio when no track
    gives any."""
    tracks: list[_Track] = []
    try:
        for stream in streams:
            tracks.append(_Track(stream.index, _chunks(path, stream.index)))
        return _sum(tracks, emit, lead_in, end_s)
    finally:
        for track in tracks:
            track.close()


def _sum(
    tracks: list[_Track],
    emit: Callable[[np.ndarray], None],
    lead_in: Callable[[float], float],
    end_s: float | None,
) -> MixedTracks:
    starts = [t.ahead[0] for t in tracks if t.ahead is not None and t.ahead[0] is not None]
    first = min(starts) if starts else 0.0
    origin = first - lead_in(first)
    for track in tracks:
        track.clock = Clock(origin, end_sample(end_s, origin))
    levels = ChannelLevels(SAMPLE_RATE, len(tracks)) if 2 <= len(tracks) <= MAX_SIDES else None
    automix = AutoMix(len(tracks))
    emitted = 0

    def give(upto: int) -> None:
        nonlocal emitted
        if upto <= emitted:
            return
        stacked = np.stack([t.take(emitted, upto - emitted) for t in tracks])
        if levels is not None:
            levels.add(stacked)
        emit(automix.mix(stacked))
        emitted = upto

    while any(t.going for t in tracks):
        min((t for t in tracks if t.going), key=lambda t: t.end).read()
        # Summed up to where every track still going has got (one that ended is silent from there).
        ready = min((t.end for t in tracks if t.going), default=max(t.end for t in tracks))
        while ready - emitted >= EMIT_SAMPLES:
            give(emitted + EMIT_SAMPLES)
    give(max(t.end for t in tracks))
    if not any(t.decoded for t in tracks):
        raise NoAudio(next((t.error for t in tracks if t.error), "no decodable audio in any track"))
    notes = [
        f"#{t.index} left out{f' after {t.end / SAMPLE_RATE:.1f} s' if t.decoded else ''} ({t.error})"
        for t in tracks
        if t.error
    ]
    notes += [
        f"#{t.index}'s timestamps are broken: its audio follows on" for t in tracks if not t.clock.timed
    ]
    gaps_s = max(t.gaps for t in tracks) / SAMPLE_RATE
    return MixedTracks(levels.levels() if levels is not None else None, "; ".join(notes), first, gaps_s)


def ffmpeg_reason(exc: BaseException) -> str:
    """The reason of a decoding error, without the path FFmpegError's str() carries."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc) or type(exc).__name__
