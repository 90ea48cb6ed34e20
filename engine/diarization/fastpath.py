"""The monologue fast path: decide from a sample of the file that one voice speaks throughout, and
skip the rest of diarization.

Two kinds of evidence, both from what the diarizer computes first anyway:

1. The segmentation model, over every chunk of the file (the cheap part: about a tenth of the
   diarizer's time). It tells apart the voices inside a 10 s chunk: the chunks where a second local
   speaker talks alone for at least `SECOND_VOICE_S` are the best places to look for two voices.
   Not proof on its own: a sudden change of level (a quiet passage, the same speaker re-recorded)
   can make it call one voice two.
2. Voice embeddings of the local speakers of at most `SAMPLE_CHUNKS` chunks spread over the file's
   speech and of at most `SECOND_VOICE_CHUNKS` of those where the model heard a second voice (the
   expensive part, which the fast path saves on the other chunks). The file is one voice when every
   sampled speaker's embedding is at least `threshold` (cosine) like the sample's mean voice, and
   the sample's units do not split stably into two voices (voice_splits.py): the espeak generator's
   closest pair scores 0.95-0.98 there, as espeak monologues do (0.94-0.98).
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
from voxdock.engine.diarization.voice_splits import holds_two_voices

SAMPLE_CHUNKS = 8
SECOND_VOICE_CHUNKS = 4
# A second local speaker talking alone this long in a chunk: a place where two voices may be. Real
# and espeak monologues reached 0.2 s at most, and 7 of the 9 AMI conversations passed 1 s.
SECOND_VOICE_S = 0.5
MIN_SPEECH_S = 1.0  # a sampled speaker with less speech is not compared
# Above every real conversation's score measured, through a telephone line or a codec too
# (bench/diarization_eval.py, each --channel): up to 0.879 wideband (real voices mixed; AMI excerpts up
# to 0.798) but up to 0.935 over a telephone line, where CAM++ hears voices as more alike (0.91 skipped
# two AMI excerpts there, ami_trn00 at 0.919 with three speakers). The bench's one real monologue long
# enough to compare (jfk) scores from 0.982 (MP3); espeak monologues from 0.926 (AMR), and at 0.95 the
# fast path still takes 36 of the bench's 40 monologues wideband (37 before the sample's units were
# checked for two voices; that check diarizes 4 of the 12 espeak conversations it skipped). A
# monologue below the threshold is diarized: skipping a conversation loses its speakers, diarizing a
# monologue costs only time.
DEFAULT_THRESHOLD = 0.95

ONE_VOICE = "one voice"
TOO_SHORT = "too short to compare"
DISSIMILAR = "voices differ"
TWO_ALIKE = "two alike voices"


@dataclass(frozen=True)
class FastPathDecision:
    monologue: bool
    reason: str
    similarity: float = math.nan  # lowest similarity of a sampled voice to the sample's mean voice
    threshold: float = math.nan


def sample_chunks(alone_seconds: np.ndarray) -> np.ndarray:
    """Chunks to embed, from (chunks, 3) seconds each local speaker talks alone: at most
    `SAMPLE_CHUNKS` with speech spread evenly in time, and the `SECOND_VOICE_CHUNKS` where a second
    local speaker talks longest alone (at least `SECOND_VOICE_S`)."""
    with_speech = np.flatnonzero(alone_seconds.sum(axis=1) > 0)
    if with_speech.size > SAMPLE_CHUNKS:
        picks = np.round(np.linspace(0, with_speech.size - 1, SAMPLE_CHUNKS)).astype(np.int64)
        with_speech = with_speech[np.unique(picks)]
    second = np.sort(alone_seconds, axis=1)[:, -2] if alone_seconds.shape[1] > 1 else alone_seconds[:, 0] * 0
    candidates = np.flatnonzero(second >= SECOND_VOICE_S)
    strongest = candidates[np.argsort(-second[candidates], kind="stable")][:SECOND_VOICE_CHUNKS]
    return np.union1d(with_speech, strongest)


def second_voice_heard(alone_seconds: np.ndarray) -> bool:
    """Whether a second local speaker talks alone at least `SECOND_VOICE_S` in some chunk."""
    if alone_seconds.shape[0] == 0 or alone_seconds.shape[1] < 2:
        return False
    return bool((np.sort(alone_seconds, axis=1)[:, -2] >= SECOND_VOICE_S).any())


def one_voice(
    embeddings: np.ndarray,
    seconds: np.ndarray,
    threshold: float,
    *,
    heard_at_once: bool,
    second_voice: bool,
    units: tuple[np.ndarray, np.ndarray] | None = None,
) -> FastPathDecision:
    """Whether sampled local speakers (rows) are one voice. With fewer than two to compare, only when
    `heard_at_once` (the whole file is one chunk) and the segmentation model, which tells voices
    apart inside a chunk, heard no `second_voice` there; otherwise the file is diarized (it has little
    speech, so that costs little). Four speakers in a 30 s AMI excerpt with 5 s of quiet speech gave
    one usable local speaker: a file of several chunks is not judged on so little. The sampled
    `units` (embeddings, seconds), where given, must not hold two voices either."""
    usable = seconds >= MIN_SPEECH_S
    if usable.sum() < 2:
        return FastPathDecision(heard_at_once and not second_voice, TOO_SHORT, math.nan, threshold)
    points = normalise(np.asarray(embeddings[usable], dtype=np.float64))
    mean = normalise(points.mean(axis=0, keepdims=True))[0]
    lowest = float((points @ mean).min())
    if lowest >= threshold and units is not None and holds_two_voices(*units):
        return FastPathDecision(False, TWO_ALIKE, lowest, threshold)
    if lowest >= threshold:
        return FastPathDecision(True, ONE_VOICE, lowest, threshold)
    return FastPathDecision(False, DISSIMILAR, lowest, threshold)
