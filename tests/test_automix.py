"""Microphones mixed as an automixer mixes them (engine/automix.py): whoever talks is heard at their
microphone's level, the others turned down, a channel of steady noise wins no share, and the mix is
the same however the audio is chunked."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REAL

from voxdock.engine.automix import AutoMix
from voxdock.engine.decode import SAMPLE_RATE, decode_file


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return decode_file(REAL / "jfk.wav").samples.astype(np.float64) * 0.5


def _microphones(voice: np.ndarray, scratch_dbfs: float) -> np.ndarray:
    """Three microphones with hiss 70 dB down: the talker on the first; on the second, steady room
    noise at `scratch_dbfs` (a camera's scratch microphone, nobody close to it)."""
    rng = np.random.default_rng(7)
    mics = rng.normal(0.0, 10 ** (-70 / 20), (3, voice.shape[0]))
    mics[0] += voice
    mics[1] += rng.normal(0.0, 10 ** (scratch_dbfs / 20), voice.shape[0])
    return mics


def _snr_db(mixed: np.ndarray, voice: np.ndarray, gain: float) -> float:
    loud = np.abs(voice) > 0.5 * voice.std()
    residual = mixed - gain * voice
    return float(10 * np.log10(np.sum((gain * voice[loud]) ** 2) / np.sum(residual[loud] ** 2)))


def test_a_channel_of_steady_noise_wins_no_share(voice: np.ndarray) -> None:
    """Room noise 17 dB under the talker's speech on a microphone of its own: summed evenly it comes
    with every word; by power share alone it still took its share between syllables; above each
    channel's noise floor it is turned down."""
    mics = _microphones(voice, scratch_dbfs=-40.0)
    even = _snr_db(mics.sum(axis=0) / np.sqrt(3), voice, 1 / np.sqrt(3))
    mixed = AutoMix(3).mix(mics)
    automixed = _snr_db(mixed, voice, 1.0)
    assert automixed >= even + 15.0, (automixed, even)  # measured 42.3 against 22.3 dB
    # Where nobody talks (the first half second of the noise alone), the mix is an even sum's level.
    quiet = AutoMix(3).mix(mics[:, : SAMPLE_RATE // 2] * [[0.0], [1.0], [1.0]])
    assert quiet[SAMPLE_RATE // 10 :].std() == pytest.approx(10 ** (-40 / 20) / np.sqrt(3), rel=0.15)


def test_the_mix_does_not_depend_on_how_the_audio_is_chunked(voice: np.ndarray) -> None:
    mics = _microphones(voice, scratch_dbfs=-50.0)
    whole = AutoMix(3).mix(mics)
    chunked = AutoMix(3)
    at, pieces = 0, []
    for size in (1, 159, 160, 161, 1000, 4093, 20_000):
        pieces.append(chunked.mix(mics[:, at : at + size]))
        at += size
    pieces.append(chunked.mix(mics[:, at:]))
    assert np.allclose(np.concatenate(pieces), whole, atol=1e-6)
