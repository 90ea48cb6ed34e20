"""Monologue fast path: skip diarization when a few voice windows spread over the file all match.

Use: `windows = pick_windows(speech, duration)`; embed `window_clip_features(samples, windows)` with
the engine's voice `embed` function (CAM++, the same as diarization); then
`decide(embeddings, windows, threshold)`. `check(...)` does the three steps.

The score is the *lowest* similarity between any two of the windows (6 windows of 3 s spread
evenly over the speech time): one window of a second voice is enough to pull it down. With GE2E
installed (engine/speaker_ge2e.py, the diarizer's second view) the similarity of two windows is
`FUSED_CAM_WEIGHT` x their CAM++ cosine + the rest x their GE2E cosine; without it, the CAM++ cosine.
The file is called a monologue when the score is at or above the threshold.

Thresholds depend on the voice model(s): `CALIBRATED_THRESHOLDS` holds one per model and one for the
fused pair (`FUSED_MODEL_KEY`), measured with bench/diarization_eval.py (command and figures in
bench/results/diarization.md; the weight and threshold were chosen on the calibration seeds) on
conversations (real pyannote sample, the shared synthetic dialogues, generated 2-4 speaker dialogues
with and without overlap, the project's fixtures) and monologues (real single-speaker recordings,
generated monologues in eight voices, the fixtures). A threshold sits above the highest score of any
conversation, plus a margin, because skipping a conversation loses its speakers for good while
diarizing a monologue only costs time. The operators' 0.434 was set for another embedding model: with
CAM++ every conversation scores above it. `default_threshold` answers for the score `check` will
compute (fused when GE2E loads); a threshold set by an operator applies to that same score.

The limit: two similar espeak voices (en-us+m3 / en-gb+f2) in a 2-speaker dialogue score as high as
the least uniform monologues (0.78 vs 0.72-0.90 fused), so with a margin the measured check takes 8
of the 10 reported monologues long enough to measure and 3 of the 8 calibration ones; the diarizer,
which sees every window and centres them on the file's mean, does separate those voices.

Short files: when the diarizer says it could not find two speakers in the file at all (too few
analysis windows for its speaker-count rule: `Diarizer.can_find_two_speakers`, passed to `check` as
`can_split`), the fast path is taken without measuring (`reason="too short for two speakers"`):
diarizing would give one speaker whatever the file holds, so skipping it loses nothing. Otherwise,
with less than `MIN_SPEECH_S` of speech (two windows' worth) there is no room for two independent
windows: `reason="short"`, not measured, and the engine diarizes. No speech at all gives
`reason="no speech"`. `FastPathDecision.skips_diarization` says whether the engine skips.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxdock.engine.fbank import fbank
from voxdock.engine.models import VOICE_MODEL_NAME
from voxdock.engine.speaker_ge2e import MODEL_NAME as GE2E_MODEL_NAME
from voxdock.engine.speaker_ge2e import Ge2eEncoder, load_ge2e

SAMPLE_RATE = 16000
WINDOW_COUNT = 6
WINDOW_S = 3.0
MIN_SPEECH_S = 2 * WINDOW_S
SIMILAR = "similar"
TOO_SHORT = "too short for two speakers"
# The operators' value, kept for models we have not measured.
FALLBACK_THRESHOLD = 0.434

FUSED_MODEL_KEY = f"{VOICE_MODEL_NAME}+{GE2E_MODEL_NAME}"
FUSED_CAM_WEIGHT = 0.5  # CAM++'s share of a window pair's fused similarity (GE2E has the rest)

# Per voice model (or fused pair): the lowest pairwise window similarity (6 x 3 s) of a monologue.
# CAM++ alone: the highest conversation score measured was 0.770 (a generated 2-speaker dialogue with
# two similar espeak voices, en-us+m3 / en-gb+f2); 0.78 keeps every measured conversation out with a
# margin of 0.01 and takes 14 of the 23 monologues long enough to measure.
# CAM++ and GE2E (equal weights): the highest conversation score was 0.780 (calibration seed 103, the
# same two voices); 0.80 keeps a margin of 0.02 and takes 15 of the 23 monologues long enough to
# measure (CAM++ alone with the same margin: 12). Weights from 0.4 to 0.6 did about as well; with more
# weight on GE2E the project's monologue fixture fell below the threshold. See
# bench/results/diarization.md.
CALIBRATED_THRESHOLDS: dict[str, float] = {VOICE_MODEL_NAME: 0.78, FUSED_MODEL_KEY: 0.80}

EmbedFn = Callable[[Sequence[np.ndarray]], np.ndarray]


def second_view(models_dir: Path | None = None) -> Ge2eEncoder | None:
    """The GE2E encoder the fast path fuses with CAM++ (a local snapshot in `models_dir` first), or
    None when it is not installed."""
    return load_ge2e(models_dir)


def default_threshold(voice_model: str, models_dir: Path | None = None) -> float:
    """The calibrated threshold for the score `check` computes with this voice model (fused with GE2E
    when GE2E is installed and the pair was measured), or the operators' 0.434 for an unmeasured one."""
    fused = f"{voice_model}+{GE2E_MODEL_NAME}"
    if fused in CALIBRATED_THRESHOLDS and second_view(models_dir) is not None:
        return CALIBRATED_THRESHOLDS[fused]
    return CALIBRATED_THRESHOLDS.get(voice_model, FALLBACK_THRESHOLD)


@dataclass
class FastPathDecision:
    monologue: bool
    similarity: float  # lowest pairwise similarity; nan when not measured (short file, no speech)
    windows: list[tuple[float, float]] = field(default_factory=list)
    threshold: float = math.nan
    reason: str = ""
    views: str = ""  # "cam++" or "cam++ + ge2e"

    @property
    def skips_diarization(self) -> bool:
        """A measured match, or a file the diarizer could not split anyway."""
        return self.monologue and self.reason in (SIMILAR, TOO_SHORT)


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
    second: np.ndarray | None = None,
    cam_weight: float = FUSED_CAM_WEIGHT,
) -> FastPathDecision:
    """Monologue if every pair of windows is at least `threshold` similar (fused with `second`, one
    GE2E row per window, when given)."""
    windows = list(windows)
    if embeddings is None or len(windows) < 2:
        reason = "no speech" if speech_s is not None and speech_s <= 0 else "short"
        return FastPathDecision(True, math.nan, windows, threshold, reason)
    sim = _cosines(embeddings)
    views = "cam++"
    if second is not None and len(second) == len(embeddings):
        sim = cam_weight * sim + (1.0 - cam_weight) * _cosines(second)
        views = "cam++ + ge2e"
    lowest = float(sim[np.triu_indices(len(sim), 1)].min())
    monologue = lowest >= threshold
    reason = SIMILAR if monologue else "dissimilar"
    return FastPathDecision(monologue, lowest, windows, threshold, reason, views)


def _cosines(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


def check(
    samples: np.ndarray,
    speech: Sequence[tuple[float, float]],
    embed: EmbedFn,
    threshold: float,
    *,
    use_second_view: bool = True,
    models_dir: Path | None = None,
    can_split: Callable[[np.ndarray, Sequence[tuple[float, float]]], bool] | None = None,
) -> FastPathDecision:
    """Pick the windows, embed them with `embed` (and GE2E when installed), decide. `can_split`
    (the diarizer's `can_find_two_speakers`) is asked first: a file it could not split is taken."""
    if can_split is not None and speech and not can_split(samples, speech):
        return FastPathDecision(True, math.nan, [], threshold, TOO_SHORT)
    duration = samples.shape[0] / SAMPLE_RATE
    windows = pick_windows(speech, duration)
    if not windows:
        return decide(None, [], threshold, speech_s=speech_seconds(speech))
    embeddings = np.asarray(embed(window_clip_features(samples, windows)))
    encoder = second_view(models_dir) if use_second_view else None
    second = encoder.embed_spans(samples, windows) if encoder is not None else None
    return decide(embeddings, windows, threshold, second=second)
