"""Which audio streams of a file are heard, and several streams heard as one recording.

Most files hold one audio stream. Those with several hold one of two things:

- versions of one programme: dubbed languages, a commentary, an audio description. Summed, they
  would talk over each other; the default stream (else the first) is heard, and the note says which.
- tracks of one recording: a multitrack recorder's microphone per person, or a streaming tool's
  (OBS) host microphone and remote guest's desktop audio on tracks of their own. Hearing only the
  first would lose the others' speakers without a word, so the tracks are summed, each mixed to mono
  by FFmpeg and placed at its start time. Of two tracks, each one's level is kept as a two-channel
  source's are (engine/channels.py): where each track holds a party of its own, the diarizer keeps
  them apart as it does the two legs of a call.

Streams are versions when their language tags differ or one is marked as a dub, a commentary or a
description (FFmpeg's dispositions); otherwise tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.stream import Disposition

from voxdock.engine.channels import ChannelLevels

SAMPLE_RATE = 16000
MAX_TRACKS = 8  # tracks summed at most (the first ones)
# A track this far ahead of another is summed with silence for it: the other ended early (or its
# container interleaves badly). Containers interleave their streams within a second or so; waiting
# for a track that has ended would hold the rest of the file.
LAG_LIMIT_S = 120.0
VERSION_MARKS = (
    Disposition.dub
    | Disposition.comment
    | Disposition.karaoke
    | Disposition.hearing_impaired
    | Disposition.visual_impaired
    | Disposition.descriptions
)
UNTAGGED = {"", "und"}


@dataclass(frozen=True)
class StreamChoice:
    streams: list[av.audio.stream.AudioStream]  # heard; summed when more than one
    note: str  # what an operator should know of the choice; "" for a file with one audio stream


def _language(stream: av.audio.stream.AudioStream) -> str:
    return str(stream.metadata.get("language", "") or "").strip().lower()


def _described(stream: av.audio.stream.AudioStream) -> str:
    language = _language(stream)
    return f"#{stream.index}" + ("" if language in UNTAGGED else f" {language}")


def streams_to_hear(streams: list[av.audio.stream.AudioStream]) -> StreamChoice:
    """The audio streams (in the container's order) to hear, and a note on the choice."""
    if len(streams) <= 1:
        return StreamChoice(list(streams), "")
    languages = {_language(s) for s in streams} - UNTAGGED
    if len(languages) > 1 or any(s.disposition & VERSION_MARKS for s in streams):
        default = [s for s in streams if s.disposition & Disposition.default]
        chosen = default[0] if default else streams[0]
        why = "the default" if default else "the first"
        listed = ", ".join(_described(s) for s in streams)
        note = f"{len(streams)} audio streams, versions of one programme ({listed})"
        note += f": heard {why}, #{chosen.index}"
        return StreamChoice([chosen], note)
    heard = list(streams[:MAX_TRACKS])
    note = f"its {len(streams)} audio streams heard together as tracks of one recording"
    if len(streams) > MAX_TRACKS:
        note += f" (the first {MAX_TRACKS})"
    return StreamChoice(heard, note)


class TrackMix:
    """16 kHz mono chunks of several tracks summed (over the square root of their number, as FFmpeg
    mixes channels), each track mixed to mono by FFmpeg and placed at its start time; of two tracks,
    each one's level too (`levels`)."""

    def __init__(self, streams: list[av.audio.stream.AudioStream]) -> None:
        self._index = {s.index: k for k, s in enumerate(streams)}
        self._resamplers = [av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE) for _ in streams]
        # Each track's samples not yet summed; None until its first frame says where it starts.
        self._pending: list[list[np.ndarray] | None] = [None] * len(streams)
        self._origin = min(_start_s(s) for s in streams)
        self._levels = ChannelLevels(SAMPLE_RATE) if len(streams) == 2 else None
        # Summed at FFmpeg's scale for channels, (a + b) / sqrt 2 of two: two copies of one signal
        # (a stereo and a surround version, untagged) do not clip.
        self._scale = np.float32(1.0 / np.sqrt(len(streams)))

    def add(self, stream_index: int, frame: av.AudioFrame) -> list[np.ndarray]:
        """The summed chunks that `frame` of stream `stream_index` completes."""
        k = self._index[stream_index]
        pending = self._pending[k]
        if pending is None:  # a track may start late: placed by its first frame's time
            lead = 0
            if frame.pts is not None and frame.time_base is not None:
                lead = max(0, round((float(frame.pts * frame.time_base) - self._origin) * SAMPLE_RATE))
            pending = self._pending[k] = [np.zeros(lead, np.float32)]
        pending += [out.to_ndarray().reshape(-1) for out in self._resamplers[k].resample(frame)]
        return self._ready(final=False)

    def finish(self) -> list[np.ndarray]:
        """What is left, every track flushed (the tracks that ended early summed as silence)."""
        for k, resampler in enumerate(self._resamplers):
            pending = self._pending[k] = self._pending[k] or []
            pending += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
        return self._ready(final=True)

    def levels(self) -> np.ndarray | None:
        """(2, 10 ms frames) dBFS of the two tracks; None for more tracks."""
        return None if self._levels is None else self._levels.levels()

    def _ready(self, *, final: bool) -> list[np.ndarray]:
        held = [sum(part.shape[0] for part in parts or []) for parts in self._pending]
        count = max(held) if final else min(held)
        if not final and max(held) - count > LAG_LIMIT_S * SAMPLE_RATE:
            count = max(held) - round(LAG_LIMIT_S * SAMPLE_RATE)
        if count <= 0:
            return []
        tracks = np.zeros((len(self._pending), count), np.float32)
        for k, parts in enumerate(self._pending):
            joined = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            taken = joined[:count]
            tracks[k, : taken.shape[0]] = taken
            self._pending[k] = [joined[count:]]
        if self._levels is not None:
            self._levels.add(tracks)
        return [tracks.sum(axis=0) * self._scale]


def _start_s(stream: av.audio.stream.AudioStream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return max(0.0, float(stream.start_time * stream.time_base))
