"""A voice print from an audio clip (`voxdock speakers enroll NAME --audio CLIP`), made the way the
engine makes a segment's voice embedding: the clip is decoded, its speech found by the VAD and cut
into pieces of at most VOICE_CLIP_MAX_S on the same length grid, each piece embedded by CAM++ on its
mean-normalised fbank; the print is the unit-length mean of the unit-length piece embeddings, so it
compares with stored files' speaker centroids as those are made (storage/speakers.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxdock.engine.decode import SAMPLE_RATE, decode_file
from voxdock.engine.fbank import fbank
from voxdock.engine.handlers import VOICE_CLIP_GRID_S, VOICE_CLIP_MAX_S
from voxdock.engine.vad import detect_speech
from voxdock.engine.voice import VoiceEncoder


@dataclass(frozen=True)
class ClipPrint:
    vector: np.ndarray  # unit length
    speech_s: float  # the speech it rests on
    pieces: int


class NoSpeech(ValueError):
    """The clip holds no speech long enough to embed."""


def speech_pieces(speech: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The speech regions cut into pieces of at most VOICE_CLIP_MAX_S, each a whole number of grid
    steps long (pieces shorter than one step are left out: too short to show a voice)."""
    pieces = []
    for start, end in speech:
        at = start
        while end - at >= VOICE_CLIP_GRID_S:
            length = min(VOICE_CLIP_MAX_S, VOICE_CLIP_GRID_S * int((end - at) / VOICE_CLIP_GRID_S))
            pieces.append((at, at + length))
            at += length
    return pieces


def clip_print(path: Path, voice: VoiceEncoder) -> ClipPrint:
    """The voice print of the speech in the audio (or video) file at `path`; NoSpeech when it has
    none. DecodeError when it cannot be read."""
    samples = decode_file(path).samples
    pieces = speech_pieces(detect_speech(samples))
    if not pieces:
        raise NoSpeech(f"no speech found in {path}")
    features = [fbank(samples[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)]) for a, b in pieces]
    embedded = voice.embed_features(features)
    units = embedded / np.linalg.norm(embedded, axis=1, keepdims=True).clip(1e-12)
    mean = units.mean(axis=0)
    return ClipPrint(
        vector=(mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32),
        speech_s=float(sum(b - a for a, b in pieces)),
        pieces=len(pieces),
    )
