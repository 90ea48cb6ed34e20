"""The monologue fast path: decide from a sample of the file that one voice speaks throughout, and
skip the rest of diarization.

Two kinds of evidence, both from what the diarizer computes first anyway:

1. The segmentation model, over every chunk of the file (the cheap part: about a tenth of the
   diarizer's time). It tells apart the voices inside a 10 s chunk; if in any chunk two local
   speakers each talk alone for at least `SECOND_VOICE_S`, the file has two voices and is diarized.
2. Voice embeddings of the local speakers of at most `SAMPLE_CHUNKS` chunks spread over the file's
   speech (the expensive part, which the fast path saves on the others). The file is one voice when
   every sampled speaker's embedding is at least `threshold` (cosine) like the sample's mean voice.
   Skipping a conversation loses its speakers for good, while diarizing a monologue only costs time,
   so the default threshold sits above every conversation's score measured
   (bench/diarization_eval.py, real meetings first).

A file whose sample is the whole file (short files) costs nothing extra: when it is not one voice,
the diarizer goes on with the embeddings already made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from voxdock.engine.diarization.clustering import normalise

SAMPLE_CHUNKS = 8
SECOND_VOICE_S = 1.0
MIN_SPEECH_S = 1.0  # a sampled speaker with less speech is not compared
# Calibrated on real meetings, the real call, the espeak conversations and real and espeak
# monologues (bench/diarization_eval.py).
DEFAULT_THRESHOLD = 0.6

ONE_VOICE = "one voice"
TOO_SHORT = "too short to compare"
SECOND_VOICE = "two voices in one chunk"
DISSIMILAR = "voices differ"
NO_SPEECH = "no speech"


@dataclass(frozen=True)
class FastPathDecision:
    monologue: bool
    reason: str
    similarity: float = math.nan  # lowest similarity of a sampled voice to the sample's mean voice
    threshold: float = math.nan

    @property
    def skips_diarization(self) -> bool:
        return self.monologue


def sample_chunks(speech_per_chunk: np.ndarray, count: int = SAMPLE_CHUNKS) -> np.ndarray:
    """Indexes of at most `count` chunks with speech, spread evenly over them in time."""
    with_speech = np.flatnonzero(speech_per_chunk > 0)
    if with_speech.size <= count:
        return with_speech
    picks = np.round(np.linspace(0, with_speech.size - 1, count)).astype(np.int64)
    return with_speech[np.unique(picks)]


def second_voice(alone_seconds: np.ndarray, minimum: float = SECOND_VOICE_S) -> bool:
    """(chunks, 3) seconds each local speaker talks alone: does any chunk hold two voices?"""
    return bool(((alone_seconds >= minimum).sum(axis=1) >= 2).any())


def one_voice(embeddings: np.ndarray, seconds: np.ndarray, threshold: float) -> FastPathDecision:
    """Whether sampled local speakers (rows) are one voice."""
    usable = seconds >= MIN_SPEECH_S
    if usable.sum() < 2:
        return FastPathDecision(True, TOO_SHORT, math.nan, threshold)
    points = normalise(np.asarray(embeddings[usable], dtype=np.float64))
    mean = normalise(points.mean(axis=0, keepdims=True))[0]
    lowest = float((points @ mean).min())
    if lowest >= threshold:
        return FastPathDecision(True, ONE_VOICE, lowest, threshold)
    return FastPathDecision(False, DISSIMILAR, lowest, threshold)
