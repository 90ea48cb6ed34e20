"""Sources of three or more channels: every channel is heard (engine/channel_mix.py). FFmpeg's mono
mix took a file that names no layout for 2.1, 5.1 or 7.1 and dropped the channel it took for LFE:
the person on that microphone was lost without a word."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REAL
from scipy.signal import butter, sosfilt

from voxdock.engine.channel_mix import LFE_CUTOFF_HZ, channel_weights
from voxdock.engine.decode import SAMPLE_RATE, decode_file
from voxdock.engine.decode_process import DecoderProcesses


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return decode_file(REAL / "jfk.wav").samples[: 4 * SAMPLE_RATE] * np.float32(0.5)


def _on_channel(voice: np.ndarray, channels: int, channel: int) -> np.ndarray:
    frames = np.zeros((voice.shape[0], channels), np.float32)
    frames[:, channel] = voice
    return frames


def _level_ratio(heard: np.ndarray, voice: np.ndarray) -> float:
    n = min(heard.shape[0], voice.shape[0])
    assert np.corrcoef(heard[:n], voice[:n])[0, 1] > 0.99  # the voice itself, in place
    return float(heard[:n].std() / voice[:n].std())


@pytest.mark.parametrize("channels", [3, 4, 6, 8])
def test_every_channel_of_a_file_naming_no_layout_is_heard(
    tmp_path: Path, voice: np.ndarray, channels: int
) -> None:
    """A field recorder's WAV with one microphone per channel names no layout; a voice on any one
    channel is heard at its own level (FFmpeg heard the third of three channels and the fourth of six
    or eight not at all, and the others 1.5 to 6 dB down)."""
    for channel in range(channels):
        path = tmp_path / f"mics{channels}_{channel}.wav"
        sf.write(path, _on_channel(voice, channels, channel), SAMPLE_RATE, subtype="PCM_16")
        heard = decode_file(path).samples
        assert _level_ratio(heard, voice) == pytest.approx(1.0, rel=0.02), channel


def test_microphones_that_do_not_talk_are_turned_down(tmp_path: Path, voice: np.ndarray) -> None:
    """Four microphones with their own noise 30 dB under the voice, one person talking on the third:
    automixed, the other three microphones' noise is turned down while the person talks (an even sum
    kept it: 6 dB less signal to noise), and where nobody talks the four are heard as an even sum
    hears them."""
    rng = np.random.default_rng(5)
    pause = np.zeros(SAMPLE_RATE, np.float32)
    talk = np.concatenate([pause, voice])
    noise = rng.normal(0.0, 10 ** (-30 / 20) * voice.std(), (talk.shape[0], 4)).astype(np.float32)
    mics = noise.copy()
    mics[:, 2] += talk
    path = tmp_path / "mics4_noisy.wav"
    sf.write(path, mics, SAMPLE_RATE, subtype="FLOAT")
    heard = decode_file(path).samples[: talk.shape[0]]
    loud = np.abs(talk) > 0.5 * voice.std()  # where the voice is well above the noise

    def snr_db(mixed: np.ndarray, signal: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(signal[loud] ** 2) / np.sum((mixed - signal)[loud] ** 2)))

    even = mics.sum(axis=1) / 2.0
    assert snr_db(heard, talk) >= snr_db(even, talk / 2.0) + 4.5
    quiet = slice(SAMPLE_RATE // 10, SAMPLE_RATE - SAMPLE_RATE // 10)
    assert heard[quiet].std() == pytest.approx(even[quiet].std(), rel=0.1)


def test_a_declared_layout_keeps_ffmpegs_weights_and_a_voice_on_its_lfe_channel(
    tmp_path: Path, voice: np.ndarray
) -> None:
    """A six-channel FLAC is 5.1 by the format's rules, whatever was plugged in. Its channels keep
    FFmpeg's weights for speech, and its LFE channel is heard above LFE_CUTOFF_HZ: a microphone on it
    is heard, a film's bass is not."""
    names = ["FL", "FR", "FC", "LFE", "SL", "SR"]
    weights = channel_weights(names)
    assert weights.tolist() == pytest.approx([0.7071, 0.7071, 1.0, 0.7071, 0.5, 0.5], abs=1e-4)
    for channel, weight in enumerate(weights.tolist()):
        path = tmp_path / f"surround_{channel}.flac"
        sf.write(path, _on_channel(voice, 6, channel), SAMPLE_RATE)
        heard = decode_file(path).samples
        # The voice on the LFE channel is heard less what is under the cutoff.
        expected = sosfilt(butter(4, LFE_CUTOFF_HZ, "highpass", fs=SAMPLE_RATE, output="sos"), voice)
        expected = expected if names[channel] == "LFE" else voice
        assert _level_ratio(heard, expected) == pytest.approx(weight, rel=0.02), names[channel]
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    bass = (0.5 * np.sin(2 * np.pi * 50.0 * t)).astype(np.float32)  # an explosion's rumble
    path = tmp_path / "film.flac"
    sf.write(path, _on_channel(bass, 6, 3), SAMPLE_RATE)
    heard = decode_file(path).samples
    assert heard[SAMPLE_RATE:].std() < 0.02 * bass.std()  # more than 34 dB down
    assert LFE_CUTOFF_HZ > 50.0


def test_the_decoder_process_hears_the_same(tmp_path: Path, voice: np.ndarray) -> None:
    path = tmp_path / "mics3.wav"
    sf.write(path, _on_channel(voice, 3, 2), SAMPLE_RATE, subtype="PCM_16")
    decoders = DecoderProcesses()
    try:
        child, _ = decoders.decode(path)
    finally:
        decoders.close()
    assert np.array_equal(child.samples, decode_file(path).samples)
    assert child.samples.std() > 0.5 * voice.std()
