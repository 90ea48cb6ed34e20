"""Files with several audio streams: the tracks of one recording are all heard, one version of a
programme is (engine/audio_streams.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.stream import Disposition
from conftest import REAL

from voxdock.engine.audio_streams import LAG_LIMIT_S, TrackMix
from voxdock.engine.channels import speaking_sides
from voxdock.engine.decode import SAMPLE_RATE, decode_file
from voxdock.engine.decode_process import DecoderProcesses
from voxdock.evaluation import write_tracks


@pytest.fixture(scope="module")
def voices() -> tuple[np.ndarray, np.ndarray]:
    """Two real voices (JFK, LJ Speech), at a level that leaves room to sum them."""
    first = decode_file(REAL / "jfk.wav").samples * np.float32(0.5)
    second = decode_file(REAL / "sb_LJ050-0131.wav").samples * np.float32(0.5)
    return first, second


@pytest.mark.parametrize(("codec", "suffix"), [("aac", "mp4"), ("pcm_s16le", "mkv")])
def test_the_tracks_of_one_recording_are_all_heard(
    tmp_path: Path, voices: tuple[np.ndarray, np.ndarray], codec: str, suffix: str
) -> None:
    """A host on the first track and a guest on the second, who starts talking (and whose track
    starts, by its timestamps) a second after the host stops: heard only the first stream, the
    guest was lost without a word. Both are heard, each in place, and each track's level is kept:
    the two tracks hold a party each, as the two channels of a call do."""
    host, guest = voices
    late = host.shape[0] / SAMPLE_RATE + 1.0
    path = write_tracks(tmp_path / f"two_tracks.{suffix}", [host, guest], codec=codec, starts_s=[0.0, late])
    audio = decode_file(path)
    expected = np.zeros(host.shape[0] + SAMPLE_RATE + guest.shape[0], np.float32)
    expected[: host.shape[0]] += host
    expected[-guest.shape[0] :] += guest
    assert abs(audio.samples.shape[0] - expected.shape[0]) < 0.05 * SAMPLE_RATE
    n = min(audio.samples.shape[0], expected.shape[0])
    assert np.corrcoef(audio.samples[:n], expected[:n])[0, 1] > 0.99
    assert abs(audio.samples[:n].std() / (expected[:n].std() / np.sqrt(2)) - 1) < 0.05  # FFmpeg's scale
    assert audio.streams_note == "its 2 audio streams heard together as tracks of one recording"
    assert audio.channel_levels is not None and audio.channel_levels.shape[0] == 2
    sides = speaking_sides(audio.channel_levels)
    assert sides is not None
    host_s = host.shape[0] / SAMPLE_RATE
    assert (sides[: int(host_s * 100)] >= 0).all() and (sides[int(late * 100) :] <= 0).all()
    decoders = DecoderProcesses()
    try:
        child, _ = decoders.decode(path)
    finally:
        decoders.close()
    assert np.array_equal(child.samples, audio.samples) and child.streams_note == audio.streams_note


def test_versions_of_a_programme_hear_one_and_say_which(
    tmp_path: Path, voices: tuple[np.ndarray, np.ndarray]
) -> None:
    """Dubbed languages, or a commentary, summed would talk over each other: one stream is heard,
    the default one where the file marks one, and the note names them all."""
    english, french = voices
    length = max(english.shape[0], french.shape[0])
    tracks = [np.pad(english, (0, length - english.shape[0])), np.pad(french, (0, length - french.shape[0]))]
    dubbed = decode_file(
        write_tracks(tmp_path / "dubbed.mkv", tracks, codec="pcm_s16le", languages=["eng", "fra"])
    )
    assert np.abs(dubbed.samples - tracks[0]).max() < 1e-3  # the first: no stream is marked default
    assert (
        dubbed.streams_note
        == "2 audio streams, versions of one programme (#0 eng, #1 fra): heard the first, #0"
    )
    assert dubbed.channel_levels is None
    marked = write_tracks(
        tmp_path / "marked.mkv",
        tracks,
        codec="pcm_s16le",
        languages=["eng", "fra"],
        dispositions=[Disposition(0), Disposition.default],
    )
    chosen = decode_file(marked)
    assert np.abs(chosen.samples - tracks[1]).max() < 1e-3
    assert chosen.streams_note.endswith("heard the default, #1")
    commentary = write_tracks(
        tmp_path / "commentary.mkv",
        tracks,
        codec="pcm_s16le",
        dispositions=[Disposition.default, Disposition.comment],
    )
    film = decode_file(commentary)
    assert np.abs(film.samples - tracks[0]).max() < 1e-3
    assert film.streams_note.startswith("2 audio streams, versions of one programme (#0, #1)")


def test_one_audio_stream_says_nothing(tmp_path: Path, voices: tuple[np.ndarray, np.ndarray]) -> None:
    audio = decode_file(write_tracks(tmp_path / "one.mp4", [voices[0]]))
    assert audio.streams_note == "" and audio.channel_levels is None


def test_a_track_that_ends_early_does_not_hold_the_others_back() -> None:
    """Summed chunks come as both tracks give samples; a track that has ended is summed as silence
    once another is `LAG_LIMIT_S` ahead of it, so the file is not held until its end."""

    class Stream:  # TrackMix reads only a stream's index and start time
        def __init__(self, index: int) -> None:
            self.index, self.start_time, self.time_base = index, 0, Fraction(1, SAMPLE_RATE)

    mix = TrackMix([Stream(0), Stream(1)])  # type: ignore[list-item]

    def frame(value: float, seconds: float) -> av.AudioFrame:
        pcm = np.full((1, int(seconds * SAMPLE_RATE)), value, np.float32)
        out = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
        out.sample_rate = SAMPLE_RATE
        return out

    given = mix.add(0, frame(0.25, 1.0))
    assert sum(c.shape[0] for c in given) == 0  # the second track has given nothing yet
    given = mix.add(1, frame(0.5, 0.5))
    summed = np.concatenate(given)
    assert abs(summed.shape[0] - SAMPLE_RATE // 2) < 64
    assert np.allclose(summed[1000:7000], 0.75 / np.sqrt(2), atol=1e-3)  # at FFmpeg's scale for two
    ahead = [mix.add(0, frame(0.25, 10.0)) for _ in range(int(LAG_LIMIT_S / 10) + 2)]
    released = sum(c.shape[0] for chunks in ahead for c in chunks)
    assert released >= 10 * SAMPLE_RATE  # past the limit: summed with silence for the second track
    rest = np.concatenate(mix.finish())
    total = summed.shape[0] + released + rest.shape[0]
    assert abs(total - (1.0 + 10.0 * (int(LAG_LIMIT_S / 10) + 2)) * SAMPLE_RATE) < 256
