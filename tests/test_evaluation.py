"""The scoring helpers the benchmarks and tests rely on: DER and turns from stored segments."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL

from voxdock.evaluation import (
    Turn,
    diarization_error_rate,
    mix_conversation,
    read_rttm,
    turns_from_segments,
    write_rttm,
)


def test_turns_join_one_speakers_segments_across_short_pauses_only() -> None:
    segments = [
        Turn(0.0, 2.0, "A"),
        Turn(2.5, 4.0, "A"),  # 0.5 s pause: same turn
        Turn(4.2, 5.0, "B"),
        Turn(7.0, 8.0, "B"),  # 2 s pause: a new turn
        Turn(8.3, 9.0, "A"),
    ]
    assert turns_from_segments(segments) == [
        Turn(0.0, 4.0, "A"),
        Turn(4.2, 5.0, "B"),
        Turn(7.0, 8.0, "B"),
        Turn(8.3, 9.0, "A"),
    ]


def test_der_counts_miss_false_alarm_and_confusion() -> None:
    reference = [Turn(0.0, 10.0, "r1"), Turn(10.0, 20.0, "r2")]
    perfect = [Turn(0.0, 10.0, "x"), Turn(10.0, 20.0, "y")]
    assert diarization_error_rate(reference, perfect, collar=0.0).der == pytest.approx(0.0, abs=1e-3)
    # r2's second half given to r1's speaker: 5 s confused out of 20 s.
    confused = [Turn(0.0, 10.0, "x"), Turn(10.0, 15.0, "y"), Turn(15.0, 20.0, "x")]
    result = diarization_error_rate(reference, confused, collar=0.0)
    assert result.confusion == pytest.approx(0.25, abs=0.01) and result.miss == pytest.approx(0.0, abs=0.01)
    # Pauses inside a reference turn left out of the hypothesis are missed speech, joined they are not.
    gappy = [Turn(0.0, 4.5, "x"), Turn(5.0, 10.0, "x"), Turn(10.0, 20.0, "y")]
    assert diarization_error_rate(reference, gappy, collar=0.0).miss == pytest.approx(0.025, abs=0.005)
    joined = turns_from_segments(gappy)
    assert diarization_error_rate(reference, joined, collar=0.0).miss == pytest.approx(0.0, abs=0.005)


def test_mixed_conversations_take_turns_and_say_where_each_voice_is(tmp_path: Path) -> None:
    rate = 16000
    a = np.full(int(7.2 * rate), 0.5, np.float32)  # 3 + 3 + 1.2 s
    b = [
        np.full(int(2.0 * rate), -0.5, np.float32),
        np.full(int(0.3 * rate), -0.5, np.float32),
    ]  # 0.3 s dropped
    samples, turns = mix_conversation({"a": [a], "b": b}, 3.0, seed=1)
    assert [t.speaker for t in turns] == ["a", "b", "a", "a"]
    assert [round(t.end - t.start, 3) for t in turns] == [3.0, 2.0, 3.0, 1.2]
    assert all(0.2 <= b.start - a.end <= 0.8 for a, b in itertools.pairwise(turns))
    for t in turns:  # the samples hold each voice where its turn says, silence between
        inside = samples[int(t.start * rate) + 1 : int(t.end * rate) - 1]
        assert np.all(inside == (0.5 if t.speaker == "a" else -0.5))
    assert np.all(samples[: int(turns[0].start * rate)] == 0)
    again, same = mix_conversation({"a": [a], "b": b}, 3.0, seed=1)
    assert same == turns and np.array_equal(again, samples)
    write_rttm(tmp_path / "x.rttm", "x", turns)
    back = read_rttm(tmp_path / "x.rttm")
    assert [t.speaker for t in back] == [t.speaker for t in turns]
    flat = [x for t in back for x in (t.start, t.end)]
    assert flat == pytest.approx([x for t in turns for x in (t.start, t.end)], abs=2e-3)


def test_the_telephone_channel_keeps_the_voice_band_and_drops_the_rest() -> None:
    from voxdock.evaluation import telephone_channel

    rate = 16000
    t = np.arange(2 * rate) / rate
    voice_band = 0.3 * np.sin(2 * np.pi * 1000 * t)
    above = 0.3 * np.sin(2 * np.pi * 5000 * t)  # a 16 kHz file carries it; a phone line does not
    below = 0.3 * np.sin(2 * np.pi * 100 * t)
    for tone, kept in ((voice_band, True), (above, False), (below, False)):
        out = telephone_channel(tone.astype(np.float32))
        assert out.shape == tone.shape and out.dtype == np.float32
        middle = slice(rate // 2, 3 * rate // 2)  # away from the filters' edges
        ratio = np.sqrt(np.mean(out[middle] ** 2) / np.mean(tone[middle] ** 2))
        if kept:  # the same tone (the filter shifts its phase), at the same level
            peak_hz = np.argmax(np.abs(np.fft.rfft(out[middle]))) * rate / out[middle].shape[0]
            assert 0.9 < ratio < 1.1 and peak_hz == 1000
        else:
            assert ratio < 0.1


@pytest.mark.parametrize("channel", ["mp3", "opus", "amr"])
def test_a_lossy_codec_round_trip_keeps_the_speech_where_it_was(channel: str) -> None:
    """The bench's codec channels (`--channel mp3|opus|amr`): real speech through the encoder and the
    engine's decoder comes back as long as it went in, in step with it (the encoder's delay taken
    out), the same voice."""
    from voxdock.engine.decode import decode_file
    from voxdock.evaluation import CHANNELS

    speech = decode_file(REAL / "pyannote_sample.wav").samples[: 10 * 16000]
    out = CHANNELS[channel](speech)
    assert out.shape == speech.shape and out.dtype == np.float32
    lags = [np.dot(speech[3200:-3200], out[3200 + lag : out.shape[0] - 3200 + lag]) for lag in range(-80, 81)]
    assert int(np.argmax(lags)) - 80 == 0  # in step: no lag fits better
    assert np.corrcoef(speech, out)[0, 1] > 0.85


def test_amr_is_a_narrowband_codec() -> None:
    """AMR-NB, a mobile call's codec, runs at 8 kHz: of white noise, nothing above 4 kHz comes back
    (MP3 and Opus at 16 kHz keep about 40% of it there)."""
    from voxdock.evaluation import CHANNELS

    noise = (0.1 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32)
    for channel, wideband in (("amr", False), ("mp3", True)):
        spectrum = np.abs(np.fft.rfft(CHANNELS[channel](noise))) ** 2
        above = spectrum[4100 * 3 :].sum() / spectrum.sum()
        assert (above > 0.2) if wideband else (above < 0.005)
