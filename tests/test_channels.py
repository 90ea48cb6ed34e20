"""Recordings with one party per channel (engine/channels.py): the decoder keeps each channel's level,
the diarizer never gives one speaker speech from both sides, and nothing else is taken for such a
recording."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import REAL, four_real_voices

from voxdock.engine.channels import (
    COPY_LIKENESS,
    LEVEL_FRAME_SAMPLES,
    SILENT_DB,
    ChannelLevels,
    copy_likeness,
    levels_of,
    sides_on_grid,
    speaking_sides,
)
from voxdock.engine.decode import decode_file
from voxdock.engine.decode_process import DecoderProcesses
from voxdock.engine.diarization import DEFAULT_FAST_PATH_THRESHOLD
from voxdock.engine.diarization.pipeline import SegmentationDiarizer
from voxdock.evaluation import (
    Turn,
    channel_per_party,
    delayed,
    diarization_error_rate,
    mix_conversation,
    read_rttm,
    split_channels,
    telephone_channel,
    write_wav,
)


def _voices() -> tuple[np.ndarray, list[Turn]]:
    """JFK and LJ (real single-speaker recordings) taking turns of 5 s."""
    voices = {
        "jfk": [decode_file(REAL / "jfk.wav").samples],
        "lj": [decode_file(REAL / "sb_LJ050-0131.wav").samples],
    }
    return mix_conversation(voices, 5.0, seed=306)


def test_levels_do_not_depend_on_how_the_audio_is_chunked() -> None:
    rng = np.random.default_rng(1)
    stereo = rng.normal(0, 0.1, (2, 16000 * 3 + 77)).astype(np.float32)
    whole = levels_of(stereo)
    pieces = ChannelLevels()
    at = 0
    for size in (1, 159, 160, 161, 1000, 4093, 20_000):
        pieces.add(stereo[:, at : at + size])
        at += size
    pieces.add(stereo[:, at:])
    assert whole.shape == (2, -(-stereo.shape[1] // LEVEL_FRAME_SAMPLES))  # the last partial frame too
    assert np.allclose(pieces.levels(), whole, atol=1e-4)


def test_levels_are_each_channels_loudness_in_dbfs() -> None:
    t = np.arange(16000) / 16000
    tone = (np.sqrt(2) * 0.1 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)  # RMS 0.1: -20 dBFS
    levels = levels_of(np.stack([tone, np.zeros_like(tone)]))
    assert np.allclose(levels[0], -20.0, atol=0.1)
    assert np.all(levels[1] == SILENT_DB)


def test_a_recording_with_one_party_per_channel_gives_each_frame_its_side() -> None:
    samples, turns = _voices()
    sides = speaking_sides(levels_of(split_channels(samples, turns, ["jfk"])))
    assert sides is not None
    frame_s = LEVEL_FRAME_SAMPLES / 16000
    middle = (np.arange(sides.shape[0]) + 0.5) * frame_s
    for turn in turns:
        inside = sides[(middle >= turn.start + 0.05) & (middle < turn.end - 0.05)]
        heard = inside[inside != 0]
        expected = 1 if turn.speaker == "jfk" else 2
        assert heard.size > 0 and np.mean(heard == expected) >= 0.99, turn
    # Over a telephone line on each leg as well.
    phone = np.stack([telephone_channel(leg) for leg in split_channels(samples, turns, ["jfk"])])
    assert speaking_sides(levels_of(phone)) is not None


def test_a_channel_per_party_gives_each_frame_its_party_and_an_unused_channel_none() -> None:
    """A field recorder's lavalier per person: four people on channels 1-4 of six, the last two
    inputs unused (noise). Each channel is a side; the unused ones are nobody's."""
    samples, turns = four_real_voices()
    parties = [[speaker] for speaker in dict.fromkeys(t.speaker for t in turns)]
    assert len(parties) == 4
    channels = channel_per_party(samples, turns, parties, crosstalk_db=-15.0)
    hiss = np.random.default_rng(3).normal(0, 10 ** (-70 / 20), (2, channels.shape[1])).astype(np.float32)
    sides = speaking_sides(levels_of(np.concatenate([channels, hiss])))
    assert sides is not None and set(np.unique(sides).tolist()) == {0, 1, 2, 3, 4}
    frame_s = LEVEL_FRAME_SAMPLES / 16000
    middle = (np.arange(sides.shape[0]) + 0.5) * frame_s
    for turn in turns:
        inside = sides[(middle >= turn.start + 0.05) & (middle < turn.end - 0.05)]
        heard = inside[inside != 0]
        expected = 1 + next(k for k, party in enumerate(parties) if turn.speaker in party)
        assert heard.size > 0 and np.mean(heard == expected) >= 0.99, turn


def test_surround_dialogue_in_the_centre_is_not_split() -> None:
    """A film's 5.1: the dialogue of two people in the centre channel, ambience on the others (each
    channel's own noise, 20 dB under the dialogue) and nothing on the LFE: one channel speaks
    throughout, which is not a recording of a party per channel."""
    samples, _ = _voices()
    rng = np.random.default_rng(4)
    ambience = rng.normal(0, 0.1 * samples.std(), (6, samples.shape[0])).astype(np.float32)
    ambience[2] += samples
    ambience[3] = 0.0
    assert speaking_sides(levels_of(ambience)) is None


def test_recordings_not_split_by_channel_give_no_sides() -> None:
    samples, turns = _voices()
    equal = np.stack([samples, samples])  # mono stored as stereo
    panned = split_channels(samples, turns, ["jfk"], crosstalk_db=-6.0, delay_ms=0.0)  # a stereo mix
    one_sided = np.stack([samples, samples * 10 ** (-26 / 20)])  # everyone on one microphone
    silent = np.zeros((2, 16000 * 10), np.float32)
    for stereo in (equal, panned, one_sided, silent):
        assert speaking_sides(levels_of(stereo)) is None
    # One channel the other one late (two recorders, a spaced pair): a syllable starts louder on one
    # side and ends louder on the other, but the two level envelopes are one envelope shifted.
    for delay_s, gain_db in ((0.05, 0.0), (0.4, 0.0), (0.4, -6.0), (0.8, 0.0)):
        copy = np.stack([samples, delayed(samples, delay_s) * 10 ** (gain_db / 20)])
        assert speaking_sides(levels_of(copy)) is None, (delay_s, gain_db)
        assert copy_likeness(levels_of(copy), floor=-60.0) >= COPY_LIKENESS
    split = levels_of(split_channels(samples, turns, ["jfk"]))
    assert copy_likeness(split, floor=-60.0) < COPY_LIKENESS - 0.2
    assert speaking_sides(np.zeros((1, 100), np.float32)) is None  # not two channels


def test_sides_on_another_grid_take_the_side_at_each_frames_centre() -> None:
    sides = np.array([1, 1, 2, 2, 0, 1], np.int8)  # 10 ms frames
    # Centres at 8, 25, 42, 59 and 76 ms: 10 ms frames 0, 2, 4, 5 and 7 (past the end: no side).
    assert sides_on_grid(sides, 5, 270).tolist() == [1, 2, 0, 1, 0]


def _encoded(path: Path, stereo: np.ndarray, codec: str, rate: int) -> Path:
    """16 kHz two-channel audio stored with `codec` at `rate` Hz in the container `path` names."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        assert isinstance(stream, av.AudioStream)
        pcm = (np.clip(stereo, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate = 16000
        resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=rate)
        for part in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(part):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_the_decoder_keeps_a_two_channel_sources_levels(tmp_path: Path) -> None:
    samples, turns = _voices()
    stereo = split_channels(samples, turns, ["jfk"])
    wav = decode_file(write_wav(tmp_path / "call.wav", stereo))
    assert wav.source_channels == 2 and wav.channel_levels is not None
    assert wav.channel_levels.shape == (2, -(-samples.shape[0] // LEVEL_FRAME_SAMPLES))
    exact = levels_of(stereo)
    heard = exact > -60.0  # 16-bit samples: quieter frames are mostly rounding
    assert np.allclose(wav.channel_levels[heard], exact[heard], atol=0.5)
    assert speaking_sides(wav.channel_levels) is not None
    # The mono samples every stage hears are still FFmpeg's mix of both channels, (L + R) / sqrt(2).
    assert np.abs(wav.samples - stereo.sum(axis=0) / np.sqrt(2)).max() < 1e-3
    assert not wav.opposite_polarity  # two parties are not one signal
    # As archives store calls: MP3, and a call centre's 8 kHz mu-law WAV with one leg per channel.
    for name, codec, rate in (("call.mp3", "libmp3lame", 16000), ("call_mulaw.wav", "pcm_mulaw", 8000)):
        coded = decode_file(_encoded(tmp_path / name, stereo, codec, rate))
        assert coded.source_channels == 2 and coded.channel_levels is not None, name
        assert speaking_sides(coded.channel_levels) is not None, name
    # A mono source has none; one of six channels has six, and one voice on all six is no party per
    # channel.
    assert decode_file(REAL / "jfk.wav").channel_levels is None
    surround = decode_file(write_wav(tmp_path / "surround.wav", np.tile(samples, (6, 1)).astype(np.float32)))
    assert surround.channel_levels is not None and surround.channel_levels.shape[0] == 6
    assert speaking_sides(surround.channel_levels) is None


def test_a_decoder_child_sends_the_levels_too(tmp_path: Path) -> None:
    samples, turns = _voices()
    path = write_wav(tmp_path / "call.wav", split_channels(samples, turns, ["jfk"]))
    decoders = DecoderProcesses()
    try:
        audio, _cpu_s = decoders.decode(path)
    finally:
        decoders.close()
    here = decode_file(path)
    assert audio.channel_levels is not None and here.channel_levels is not None
    assert np.array_equal(audio.channel_levels, here.channel_levels)
    assert np.array_equal(audio.samples, here.samples)


@pytest.mark.models
def test_a_call_over_a_phone_line_one_leg_per_channel_is_two_people(
    diarizer: SegmentationDiarizer, tmp_path: Path
) -> None:
    """The real call through a telephone channel: mixed to mono, CAM++ hears its two people as one
    voice (measured: one speaker, DER 49.3 %); with each leg on its own channel they are two (DER
    10.3 %), and the fast path does not take it for a monologue."""
    reference = read_rttm(REAL / "pyannote_sample.rttm")
    samples = decode_file(REAL / "pyannote_sample.wav").samples
    stereo = split_channels(samples, reference, [reference[0].speaker])
    phone = np.stack([telephone_channel(leg) for leg in stereo])
    audio = decode_file(write_wav(tmp_path / "call.wav", phone))

    def der(levels: np.ndarray | None) -> tuple[float, int, bool]:
        result = diarizer.diarize(
            audio.samples, fast_path_threshold=DEFAULT_FAST_PATH_THRESHOLD, channel_levels=levels
        )
        hypothesis = [Turn(t.start, t.end, t.speaker) for t in result.all_turns]
        return (
            diarization_error_rate(reference, hypothesis, collar=0.25).der,
            len(result.speakers),
            result.fast_path,
        )

    split, speakers, fast = der(audio.channel_levels)
    assert speakers == 2 and not fast
    assert split <= 0.15
    mono, _, _ = der(None)
    assert mono > split + 0.2


@pytest.mark.models
def test_a_monologue_on_one_channel_still_takes_the_fast_path(diarizer: SegmentationDiarizer) -> None:
    samples = decode_file(REAL / "jfk.wav").samples
    levels = levels_of(np.stack([samples, samples * 10 ** (-26 / 20)]))
    result = diarizer.diarize(samples, fast_path_threshold=DEFAULT_FAST_PATH_THRESHOLD, channel_levels=levels)
    assert result.fast_path
