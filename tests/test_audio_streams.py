"""Files with several audio streams: the tracks of one recording are all heard, one version of a
programme is (engine/audio_streams.py)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from av.stream import Disposition
from conftest import REAL, four_real_voices

from voxdock.engine.channels import speaking_sides
from voxdock.engine.decode import SAMPLE_RATE, DecodeError, decode_file
from voxdock.engine.decode_process import DecoderProcesses
from voxdock.evaluation import channel_per_party, write_tracks


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
    # Automixed: each heard at their own track's level (summed, each was 3 dB down).
    assert abs(audio.samples[:n].std() / expected[:n].std() - 1) < 0.05
    assert audio.streams_note == "its 2 audio streams heard together as tracks of one recording"
    assert audio.channel_levels is not None and audio.channel_levels.shape[0] == 2
    sides = speaking_sides(audio.channel_levels)
    assert sides is not None
    host_s = host.shape[0] / SAMPLE_RATE
    assert (
        np.isin(sides[: int(host_s * 100)], (0, 1)).all() and np.isin(sides[int(late * 100) :], (0, 2)).all()
    )
    decoders = DecoderProcesses()
    try:
        child, _ = decoders.decode(path)
    finally:
        decoders.close()
    assert np.array_equal(child.samples, audio.samples) and child.streams_note == audio.streams_note


def test_a_track_per_person_gives_each_track_its_party(tmp_path: Path) -> None:
    """A podcast recorded a track per person (four real people, each microphone hearing the others
    15 dB down): every track's level is kept, so each person's turns are on their own track's side,
    as with two tracks."""
    samples, turns = four_real_voices()
    parties = [[speaker] for speaker in dict.fromkeys(t.speaker for t in turns)]
    tracks = channel_per_party(samples, turns, parties, crosstalk_db=-15.0) * np.float32(0.5)
    audio = decode_file(write_tracks(tmp_path / "podcast.mkv", list(tracks), codec="flac"))
    assert audio.channel_levels is not None and audio.channel_levels.shape[0] == 4
    sides = speaking_sides(audio.channel_levels)
    assert sides is not None
    middle = (np.arange(sides.shape[0]) + 0.5) / 100
    for turn in turns:
        inside = sides[(middle >= turn.start + 0.05) & (middle < turn.end - 0.05)]
        heard = inside[inside != 0]
        expected = 1 + next(k for k, party in enumerate(parties) if turn.speaker in party)
        assert heard.size > 0 and np.mean(heard == expected) >= 0.99, turn


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
    # Rips often mark a commentary by its title alone, in the film's own language.
    titled = write_tracks(
        tmp_path / "titled.mkv",
        tracks,
        codec="pcm_s16le",
        languages=["eng", "eng"],
        titles=["Stereo", "Director's Commentary"],
    )
    film = decode_file(titled)
    assert np.abs(film.samples - tracks[0]).max() < 1e-3
    assert film.streams_note.endswith("heard the first, #0")


def test_one_audio_stream_says_nothing(tmp_path: Path, voices: tuple[np.ndarray, np.ndarray]) -> None:
    audio = decode_file(write_tracks(tmp_path / "one.mp4", [voices[0]]))
    assert audio.streams_note == "" and audio.channel_levels is None


def clicks(seconds: float, every: float, amplitude: float) -> np.ndarray:
    """5 ms bursts every `every` seconds from 0: where they land in the decoded audio says where a
    track was placed."""
    out = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    for at in np.arange(0.0, seconds, every):
        out[int(at * SAMPLE_RATE) : int(at * SAMPLE_RATE) + 80] = amplitude
    return out


def bursts(samples: np.ndarray, level: float) -> list[float]:
    """Times (s) where the decoded audio rises above `level`, one per burst."""
    loud = np.flatnonzero(np.abs(samples) > level)
    if loud.size == 0:
        return []
    firsts = loud[np.r_[True, np.diff(loud) > SAMPLE_RATE // 10]]
    return [round(float(i) / SAMPLE_RATE, 2) for i in firsts]


@pytest.mark.parametrize("interleave", [True, False])
@pytest.mark.parametrize("host_s", [160.0, 300.0])
def test_tracks_are_placed_by_their_timestamps_however_the_file_interleaves_them(
    tmp_path: Path, interleave: bool, host_s: float
) -> None:
    """A guest whose track starts 125 s into the recording, with a pause of 5 s in it (no packets),
    and ends at 160 s, with the host or while the host goes on to 300 s: each burst lands where its
    timestamps say.
    Written a stream after another, as some tools do, one demuxer for both would run minutes ahead
    on the host's track before the guest's first packet; nothing is held back or moved."""
    host = clicks(host_s, 1.0, 0.3)
    guest = [(125.0, clicks(20.0, 2.0, 0.9)), (150.0, clicks(10.0, 2.0, 0.9))]
    path = write_tracks(
        tmp_path / f"placed_{interleave}_{host_s:.0f}.mkv",
        [host, guest],
        codec="pcm_s16le",
        interleave=interleave,
    )
    audio = decode_file(path)
    assert abs(audio.duration_s - max(host_s, 160.0)) < 0.05
    guest_level = 0.9 / np.sqrt(2) * 0.8  # the guest's bursts, at the sum's scale; the host's are below
    expected = [125.0 + 2 * k for k in range(10)] + [150.0 + 2 * k for k in range(5)]
    assert bursts(audio.samples, guest_level) == pytest.approx(expected, abs=0.02)
    host_level = 0.3 / np.sqrt(2) * 0.8
    heard = [t for t in bursts(audio.samples, host_level) if t not in expected]
    assert heard == pytest.approx([float(k) for k in range(int(host_s)) if k not in expected], abs=0.02)
    assert audio.streams_note == (
        "its 2 audio streams heard together as tracks of one recording"
        "; pauses without packets kept as silence (5.0 s)"  # the guest's
    )


def test_a_track_that_cannot_be_decoded_is_left_out_and_said(
    tmp_path: Path, voices: tuple[np.ndarray, np.ndarray]
) -> None:
    """A second track with a codec no decoder knows, or with corrupt packets: the first is heard whole
    (as when only the first stream was read) and the note says which track was left out and why."""
    host, guest = voices
    flac = write_tracks(tmp_path / "flac.mkv", [host, guest], codec="flac")
    raw = flac.read_bytes()
    assert raw.count(b"A_FLAC") == 2
    first = raw.index(b"A_FLAC")
    unknown = tmp_path / "unknown.mkv"
    unknown.write_bytes(raw[: first + 1] + raw[first + 1 :].replace(b"A_FLAC", b"A_FLAX", 1))
    audio = decode_file(unknown)
    n = min(host.shape[0], audio.samples.shape[0])
    assert np.corrcoef(audio.samples[:n], host[:n])[0, 1] > 0.99
    assert audio.streams_note.startswith("its 2 audio streams heard together as tracks of one recording; ")
    assert "#1 left out (" in audio.streams_note
    decoders = DecoderProcesses()
    try:
        child, _ = decoders.decode(unknown)
        assert np.array_equal(child.samples, audio.samples) and child.streams_note == audio.streams_note
    finally:
        decoders.close()


def test_a_stream_that_changes_its_layout_midway_is_heard_throughout(tmp_path: Path) -> None:
    """Recordings joined end to end as raw AAC (ADTS), stereo then mono then stereo, as a broadcast
    switches between 2.0 and 5.1: PyAV's resampler rejects a frame unlike the one it was set up by,
    and the file failed with a bare ValueError; every part is heard now."""
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE * 2) / SAMPLE_RATE)).astype(np.float32)
    parts = {}
    for layout in ("stereo", "mono"):
        part = tmp_path / f"{layout}.aac"
        with av.open(str(part), "w", format="adts") as container:
            stream = container.add_stream("aac", rate=SAMPLE_RATE)
            stream.layout = layout
            pcm = np.tile((tone * 32767).astype(np.int16), (2 if layout == "stereo" else 1, 1))
            for i in range(0, pcm.shape[1], 1024):
                interleaved = np.ascontiguousarray(pcm[:, i : i + 1024].T.reshape(1, -1))
                frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout=layout)
                frame.sample_rate = SAMPLE_RATE
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        parts[layout] = part.read_bytes()
    joined = tmp_path / "joined.aac"
    joined.write_bytes(parts["stereo"] + parts["mono"] + parts["stereo"])
    with av.open(str(joined)) as check:
        assert {frame.layout.name for frame in check.decode(audio=0)} == {"stereo", "mono"}
    audio = decode_file(joined)
    assert abs(audio.duration_s - 6.0) < 0.5
    middle = audio.samples[int(2.5 * SAMPLE_RATE) : int(3.5 * SAMPLE_RATE)]
    assert np.sqrt(np.mean(middle**2)) > 0.1  # the mono part is there, at the tone's level


@pytest.mark.parametrize("suffix", ["mkv", "webm"])
def test_audio_starting_after_the_container_does_is_not_taken_for_truncated(
    tmp_path: Path, voices: tuple[np.ndarray, np.ndarray], suffix: str
) -> None:
    """Matroska gives only the container's end (from 0): audio starting 5 s in was measured against
    all of it and the file failed as `truncated: the header says 15.0 s but only 10.0 s decodes`."""
    voice = np.repeat(voices[0], 3)  # at 48 kHz, as Opus is coded
    path = write_tracks(
        tmp_path / f"late.{suffix}", [voice], codec="libopus", starts_s=[5.0], sample_rate=48000
    )
    audio = decode_file(path)
    assert abs(audio.duration_s - voices[0].shape[0] / SAMPLE_RATE) < 0.1


@pytest.mark.parametrize("tracks", [1, 2])
def test_a_videos_sound_starting_after_its_picture_keeps_the_videos_times(
    tmp_path: Path, tracks: int
) -> None:
    """Sound that starts 3 s after the picture: heard from its first frame, every transcript time (and
    subtitle made from it) was 3 s early against the video. The silence before it is kept."""
    from fractions import Fraction

    path = tmp_path / f"late_sound_{tracks}.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio_streams = []
        for _ in range(tracks):
            stream = container.add_stream("pcm_s16le", rate=SAMPLE_RATE)
            assert isinstance(stream, av.AudioStream)
            stream.layout = "mono"
            audio_streams.append(stream)
        for i in range(25 * 10):
            picture = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            picture.pts, picture.time_base = i, Fraction(1, 25)
            for packet in video.encode(picture):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        pcm = (clicks(6.0, 1.0, 0.5) * 32767).astype(np.int16)
        for stream in audio_streams:
            for i in range(0, pcm.shape[0], 1024):
                frame = av.AudioFrame.from_ndarray(pcm[None, i : i + 1024], format="s16", layout="mono")
                frame.sample_rate = SAMPLE_RATE
                frame.pts, frame.time_base = 3 * SAMPLE_RATE + i, Fraction(1, SAMPLE_RATE)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    audio = decode_file(path)
    assert abs(audio.duration_s - 9.0) < 0.05
    assert bursts(audio.samples, 0.2) == pytest.approx([3.0 + k for k in range(6)], abs=0.02)


def test_tracks_whose_timestamps_go_back_keep_all_their_audio(tmp_path: Path) -> None:
    """Two two-track MPEG-TS recordings joined end to end (`cat`, as capture tools split and join
    them): the second one's timestamps start again. Followed, they put it on top of the first and
    half of each track was lost; the audio follows on, and the note says the timestamps broke."""
    halves = [
        write_tracks(tmp_path / f"half{k}.ts", [clicks(10.0, 1.0, 0.5)] * 2, codec="mp2") for k in (0, 1)
    ]
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(half.read_bytes() for half in halves))
    audio = decode_file(joined)
    assert abs(audio.duration_s - 20.0) < 0.2
    heard = bursts(audio.samples, 0.4)
    assert len(heard) == 20 and heard[10] - heard[0] == pytest.approx(10.0, abs=0.1)
    assert "timestamps are broken: its audio follows on" in audio.streams_note


@pytest.mark.parametrize("tracks", [1, 2])
def test_a_pause_without_packets_is_silence_and_a_missing_end_is_truncated(
    tmp_path: Path, tracks: int
) -> None:
    """A participant muted for 10 s in a WebRTC recording sends no packets: run together with what
    came after, the rest of the file was 10 s early, and past a tenth of its length it failed as
    truncated. The pause is silence in place and the note says how much; a file whose end is missing
    (a copy cut short) still fails as truncated."""
    rate = 48000
    # At 48 kHz, as Opus is coded; each burst half a second into its second (the encoder's look-ahead
    # carries the first milliseconds after a jump into the frame before it).
    burst = np.roll(np.repeat(clicks(10.0, 1.0, 0.5), 3), rate // 2)
    pieces = [(0.0, burst), (20.0, burst)]
    path = write_tracks(tmp_path / "muted.webm", [pieces] * tracks, codec="libopus", sample_rate=rate)
    audio = decode_file(path)
    assert abs(audio.duration_s - 30.0) < 0.05
    expected = [0.5 + k for k in range(10)] + [20.5 + k for k in range(10)]
    assert bursts(audio.samples, 0.2) == pytest.approx(expected, abs=0.03)
    assert audio.streams_note.endswith("pauses without packets kept as silence (10.0 s)")
    cut = tmp_path / "cut.webm"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DecodeError, match=r"truncated: the header says 30\.0 s"):
        decode_file(cut)
