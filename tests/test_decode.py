"""Decoding: one array the size of the audio, written in place (the joined per-frame list held the
audio twice at the peak and left its size behind in the C heap: 1.6 GB peak, 1.4 GB held for a
3-hour file whose audio is 0.7 GB)."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA, REAL

from voxdock.engine.decode import SAMPLE_RATE, SampleBuffer, decode_file
from voxdock.engine.decode_process import DecoderProcesses
from voxdock.evaluation import write_wav

# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's (pytest's) size at the fork.
MEASURE = """
import re, sys, psutil
from voxdock.engine.decode import decode_file
def high_water():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024
decode_file(sys.argv[2])  # the codec's code and tables are paged in once, whatever the length
base = psutil.Process().memory_info().rss
audio = decode_file(sys.argv[1])
print(audio.samples.nbytes, high_water() - base, psutil.Process().memory_info().rss - base)
"""


def test_samples_grow_past_a_short_declaration_and_keep_every_value() -> None:
    samples = SampleBuffer(expected_seconds=0.1)
    chunks = [np.full(5000, i / 10, dtype=np.float32) for i in range(10)]
    for chunk in chunks:
        samples.add(chunk)
    assert np.array_equal(samples.array(), np.concatenate(chunks))
    assert samples.finite
    samples.add(np.array([np.nan], dtype=np.float32))
    assert not samples.finite


def test_an_overstated_length_keeps_only_what_decoded() -> None:
    samples = SampleBuffer(expected_seconds=100.0)
    samples.add(np.ones(SAMPLE_RATE, dtype=np.float32))
    out = samples.array()
    assert out.shape == (SAMPLE_RATE,) and out.base is None  # a copy: the big buffer is let go


def test_fixtures_decode_to_their_length() -> None:
    audio = decode_file(MEDIA / "dialogue_2spk.wav")
    with wave.open(str(MEDIA / "dialogue_2spk.wav")) as w:
        seconds = w.getnframes() / w.getframerate()
    assert abs(audio.duration_s - seconds) < 0.05
    assert audio.samples.dtype == np.float32 and np.abs(audio.samples).max() <= 1.0


def test_a_channel_in_opposite_polarity_is_heard_not_cancelled(tmp_path: Path) -> None:
    """A stereo recording of one voice with a channel wired in opposite polarity: FFmpeg's mix,
    (L + R) / sqrt 2, would be silence (or a thin residue), so the decoder hears it as (L - R) / sqrt 2,
    which is the voice; in the decode child too. Ordinary stereo keeps FFmpeg's mix."""
    voice = decode_file(REAL / "jfk.wav").samples * np.float32(0.7)
    for name, right in (("inverted", -voice), ("inverted_quieter", -0.6 * voice)):
        path = write_wav(tmp_path / f"{name}.wav", np.stack([voice, right]))
        audio = decode_file(path)
        assert audio.opposite_polarity, name
        expected = (voice - right) / np.sqrt(2)
        assert audio.samples.shape == voice.shape
        assert np.abs(audio.samples - expected).max() < 2e-3, name
        decoders = DecoderProcesses()
        try:
            child, _ = decoders.decode(path)
        finally:
            decoders.close()
        assert child.opposite_polarity and np.array_equal(child.samples, audio.samples), name
    # Two unrelated signals, each with a DC offset of the other sign, are not one signal inverted.
    noise = np.random.default_rng(3).normal(0.0, 0.05, (2, voice.shape[0])).astype(np.float32)
    offset = write_wav(tmp_path / "offset.wav", noise + np.array([[0.2], [-0.2]], dtype=np.float32))
    assert not decode_file(offset).opposite_polarity
    # The same voice on both channels, and two different signals: FFmpeg's mix, as before.
    echo = np.roll(voice, SAMPLE_RATE * 3)
    for name, right in (("same", voice), ("different", echo)):
        audio = decode_file(write_wav(tmp_path / f"{name}.wav", np.stack([voice, right])))
        assert not audio.opposite_polarity, name
        assert np.abs(audio.samples - (voice + right) / np.sqrt(2)).max() < 2e-3, name


@pytest.mark.slow
def test_decoding_holds_the_audio_once(tmp_path: Path) -> None:
    path = tmp_path / "ten_minutes.wav"
    rng = np.random.default_rng(0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for _ in range(10):
            w.writeframes((rng.standard_normal(60 * SAMPLE_RATE) * 3000).astype(np.int16).tobytes())
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), str(MEDIA / "dialogue_2spk.wav")],
        capture_output=True,
        text=True,
        check=True,
    )
    audio_bytes, peak, held = (int(x) for x in out.stdout.split())
    assert audio_bytes == 600 * SAMPLE_RATE * 4
    assert peak < 1.3 * audio_bytes, f"peak {peak / 1e6:.0f} MB for {audio_bytes / 1e6:.0f} MB of audio"
    assert held < 1.15 * audio_bytes, f"{held / 1e6:.0f} MB held after decoding"
