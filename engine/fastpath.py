"""Monologue fast path: skip diarization when a few voice windows spread over the file all match.

Use: `windows = pick_windows(speech, duration)`; embed `window_clip_features(samples, windows)` with
the engine's voice `embed` function (CAM++, the same as diarization); then
`decide(embeddings, windows, threshold)`. `check(...)` does the three steps.

The score is the *lowest* cosine similarity between any two of the windows (6 windows of 3 s spread
evenly over the speech time): one window of a second voice is enough to pull it down. The file is
called a monologue when the score is at or above the threshold.

Thresholds depend on the voice model: `CALIBRATED_THRESHOLDS` holds one per model, measured with
bench/diarization_eval.py (command and figures in bench/results/diarization.md) on conversations
(real pyannote sample, the shared synthetic dialogues, generated 2-4 speaker dialogues with and
without overlap, the project's fixtures) and monologues (real single-speaker recordings, generated
monologues in eight voices, the fixtures). It is set above the highest score of any conversation,
plus a margin, because skipping a conversation loses its speakers for good while diarizing a
monologue only costs time. The operators' 0.434 was set for another embedding model: with CAM++
every conversation scores above it.

Very short files: with less than `MIN_SPEECH_S` of speech (two windows' worth) there is no room for
two independent windows; such a file is treated as a monologue (`monologue=True`, `similarity=nan`,
`reason="short"`): diarizing a few seconds gives at most a turn or two, and its voice embedding is
computed per segment anyway. No speech at all gives `reason="no speech"`, also monologue.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from voxdock.engine.fbank import fbank
from voxdock.engine.models import VOICE_MODEL_NAME

SAMPLE_RATE = 16000
WINDOW_COUNT = 6
WINDOW_S = 3.0
MIN_SPEECH_S = 2 * WINDOW_S
# The operators' value, kept for models we have not measured.
FALLBACK_THRESHOLD = 0.434

# Per voice model: the lowest pairwise window similarity (6 x 3 s) at which a file is a monologue.
# CAM++: the highest conversation score measured was 0.770 (a generated 2-speaker dialogue with two
# similar espeak voices, en-us+m3 / en-gb+f2); monologues of 6+ s of speech scored 0.66-0.94.
# 0.78 keeps every measured conversation out with a margin of only 0.01 and takes about 80 % of the
# monologues. See bench/results/diarization.md.
CALIBRATED_THRESHOLDS: dict[str, float] = {VOICE_MODEL_NAME: 0.78}

EmbedFn = Callable[[Sequence[np.ndarray]], np.ndarray]


def default_threshold(voice_model: str) -> float:
    """The calibrated threshold for a voice model, or the operators' 0.434 for an unmeasured one."""
    return CALIBRATED_THRESHOLDS.get(voice_model, FALLBACK_THRESHOLD)


@dataclass
class FastPathDecision:
    monologue: bool
    similarity: float  # lowest pairwise cosine; nan when not measured (short file, no speech)
    windows: list[tuple[float, float]] = field(default_factory=list)
    threshold: float = math.nan
    reason: str = ""


def speech_seconds(speech: Sequence[tuple[float, float]]) -> float:
    return float(sum(max(0.0, b - a) for a, b in speech))


def pick_windows(
    speech: Sequence[tuple[float, float]],
    duration: float,
    *,
    count: int = WINDOW_COUNT,
    length: float = WINDOW_S,
) -> list[tuple[float, float]]:
    """`count` windows of `length` s centred at evenly spaced points of the speech time.

    Empty when there is less than two windows' worth of speech. A window is clipped to the file.
    """
    regions = sorted((max(0.0, a), min(duration, b)) for a, b in speech if b > a)
    total = speech_seconds(regions)
    if total < 2 * length or not regions:
        return []
    n = max(2, min(count, int(total // length)))
    out = []
    for i in range(n):
        target = (i + 0.5) * total / n
        acc = 0.0
        centre = regions[-1][1]
        for a, b in regions:
            if acc + (b - a) >= target:
                centre = a + (target - acc)
                break
            acc += b - a
        start = min(max(0.0, centre - length / 2), max(0.0, duration - length))
        out.append((start, min(duration, start + length)))
    return out


def window_clip_features(samples: np.ndarray, windows: Sequence[tuple[float, float]]) -> list[np.ndarray]:
    """Mean-normalised fbank features of each window's samples."""
    return [
        fbank(samples[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)], mean_normalise=True) for a, b in windows
    ]


def decide(
    embeddings: np.ndarray | None,
    windows: Sequence[tuple[float, float]],
    threshold: float,
    *,
    speech_s: float | None = None,
) -> FastPathDecision:
    """Monologue if every pair of window embeddings is at least `threshold` similar."""
    windows = list(windows)
    if embeddings is None or len(windows) < 2:
        reason = "no speech" if speech_s is not None and speech_s <= 0 else "short"
        return FastPathDecision(True, math.nan, windows, threshold, reason)
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    lowest = float(sim[np.triu_indices(len(x), 1)].min())
    monologue = lowest >= threshold
    return FastPathDecision(monologue, lowest, windows, threshold, "similar" if monologue else "dissimilar")


def check(
    samples: np.ndarray,
    speech: Sequence[tuple[float, float]],
    embed: EmbedFn,
    threshold: float,
) -> FastPathDecision:
    """Pick the windows, embed them with `embed`, decide."""
    duration = samples.shape[0] / SAMPLE_RATE
    windows = pick_windows(speech, duration)
    if not windows:
        return decide(None, [], threshold, speech_s=speech_seconds(speech))
    embeddings = np.asarray(embed(window_clip_features(samples, windows)))
    return decide(embeddings, windows, threshold)
