"""Whole-sentence voice spans: a file's speech regions cut into spans of 1-6 s, each embedded whole.

A sentence embeds a voice more reliably than a 1.5 s analysis window, so both the monologue fast
path (engine/fastpath.py) and the diarizer's check of its speaker count (engine/diarization_senko.py)
compare voices on these spans. `split_ratio` is the one score both use: for a partition of the spans
into speakers, the closest pair's mean similarity across the two over the geometric mean of their
similarity within (each view's raw cosines, weighted as in the clustering space). Measured on the
calibration files (bench/diarization_eval.py --calibration, CAM++ and GE2E): two different voices
scored at most 0.938, the halves of one voice at least 0.947. The diarizer steps its count down when
a pair reaches the one-voice ratio (or CAM++ alone is sure, see `CAM_SURE_RATIO`), and up only on the
stronger evidence of `distinct_voices`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voxdock.engine.clustering import FUSED_CAM_WEIGHT, closest_pair_ratio
from voxdock.engine.fbank import fbank

SAMPLE_RATE = 16000
SPAN_MAX_S = 6.0  # longer regions are cut into equal spans no longer than this
SPAN_MIN_S = 1.0  # shorter spans carry too little voice to compare
MAX_SPANS = 60  # the most spans embedded per file (about two to six minutes of speech)
MIN_SPANS = 4  # fewer give no reliable comparison
ONE_VOICE_RATIO = 0.945  # a split scoring at least this is one voice cut in two (CAM++ and GE2E)
ONE_VOICE_RATIO_CAM_ONLY = 0.965  # CAM++ alone: voices up to 0.955, halves of one voice from 0.90
# GE2E can split one voice by what it says (gen_d2_s706: mostly a voice's questions apart, GE2E
# 0.915, CAM++ 0.977). With three or more speakers found, CAM++ this sure of one voice outvotes it:
# distinct voices scored at most 0.959 on CAM++ there. Not between two speakers: two voices reached
# 0.966 on CAM++ there, and merging them would call a conversation a monologue.
CAM_SURE_RATIO = 0.97
# A speaker the windows' count rule left out is added only on stronger evidence than the one-voice
# ratio: a wide margin from the lowest one-voice split measured (0.947), each speaker in 3+ sentences.
DISTINCT_RATIO = 0.93
NEW_SPEAKER_SPANS = 3


def pick_spans(
    regions: Sequence[tuple[float, float]], duration: float, *, max_spans: int = MAX_SPANS
) -> list[tuple[float, float]]:
    """Each speech region cut into equal spans of at most `SPAN_MAX_S` (clipped to the file), those
    shorter than `SPAN_MIN_S` dropped, at most `max_spans` of them evenly spread, in time order."""
    spans: list[tuple[float, float]] = []
    for start, end in sorted(regions):
        start, end = max(0.0, float(start)), min(duration, float(end))
        pieces = math.ceil((end - start) / SPAN_MAX_S) if end > start else 0
        size = (end - start) / pieces if pieces else 0.0
        spans += [(start + i * size, start + (i + 1) * size) for i in range(pieces) if size >= SPAN_MIN_S]
    if len(spans) > max_spans:
        keep = np.linspace(0, len(spans) - 1, max_spans).round().astype(int)
        spans = [spans[i] for i in keep]
    return spans


def span_features(samples: np.ndarray, spans: Sequence[tuple[float, float]]) -> list[np.ndarray]:
    """Mean-normalised fbank features of each span's samples."""
    return [
        fbank(samples[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)], mean_normalise=True) for a, b in spans
    ]


class SecondView(Protocol):
    def embed_spans(self, samples: np.ndarray, spans: Sequence[tuple[float, float]]) -> np.ndarray: ...


@dataclass
class SpanVoices:
    """Whole-sentence spans and their embeddings: CAM++ and, when installed, GE2E."""

    spans: list[tuple[float, float]]
    embeddings: np.ndarray
    second: np.ndarray | None


def embed_voices(
    samples: np.ndarray,
    regions: Sequence[tuple[float, float]],
    embed: Callable[[Sequence[np.ndarray]], np.ndarray],
    second_view: SecondView | None,
) -> SpanVoices | None:
    """The spans of `regions` embedded with `embed` (CAM++) and `second_view` (GE2E) when given;
    None when there are fewer than `MIN_SPANS` of them to compare."""
    spans = pick_spans(regions, samples.shape[0] / SAMPLE_RATE)
    if len(spans) < MIN_SPANS:
        return None
    embeddings = np.asarray(embed(span_features(samples, spans)), dtype=np.float32)
    second = second_view.embed_spans(samples, spans) if second_view is not None else None
    return SpanVoices(spans, embeddings, second)


def split_ratio(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    second: np.ndarray | None = None,
    cam_weight: float = FUSED_CAM_WEIGHT,
) -> float:
    """The closest pair of speakers' ratio over the spans (`labels` 0..k-1, every speaker present)."""
    views = [np.asarray(embeddings)] if second is None else [np.asarray(embeddings), np.asarray(second)]
    weights = [1.0] if second is None else [cam_weight, 1.0 - cam_weight]
    k = int(labels.max()) + 1
    return float(sum(w * closest_pair_ratio(v, labels, k) for v, w in zip(views, weights, strict=True)))


def labels_of_spans(
    spans: Sequence[tuple[float, float]], windows: Sequence[tuple[float, float]], window_labels: np.ndarray
) -> np.ndarray:
    """Each span's speaker: the label covering most of it among the windows (-1 when none overlap)."""
    w = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    k = int(window_labels.max()) + 1 if window_labels.size else 0
    out = np.full(len(spans), -1, dtype=np.int64)
    for i, (a, b) in enumerate(spans):
        overlap = np.clip(np.minimum(w[:, 1], b) - np.maximum(w[:, 0], a), 0.0, None)
        if overlap.sum() > 0:
            out[i] = int(np.argmax(np.bincount(window_labels, weights=overlap, minlength=k)))
    return out


def _spans_by_speaker(
    spans: Sequence[tuple[float, float]],
    windows: Sequence[tuple[float, float]],
    window_labels: np.ndarray,
    min_spans_each: int,
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The spans that have a speaker (mask), their speakers and the count, or None without evidence:
    fewer than `MIN_SPANS` such spans, or a speaker with fewer than `min_spans_each` of its own."""
    labels = labels_of_spans(spans, windows, window_labels)
    keep = labels >= 0
    k = int(window_labels.max()) + 1 if window_labels.size else 0
    if keep.sum() < MIN_SPANS or k < 2 or np.bincount(labels[keep], minlength=k).min() < min_spans_each:
        return None
    return keep, labels[keep], k


def same_voice_pair(
    spans: Sequence[tuple[float, float]],
    embeddings: np.ndarray,
    second: np.ndarray | None,
    windows: Sequence[tuple[float, float]],
    window_labels: np.ndarray,
) -> bool:
    """Whether the windows' speakers include two that sound like one voice on whole spans: the
    closest pair scores at least the one-voice ratio, or, among three or more speakers, CAM++ alone
    is sure of it (`CAM_SURE_RATIO`). False without evidence (fewer than `MIN_SPANS` spans, or a
    speaker that holds no span of its own)."""
    found = _spans_by_speaker(spans, windows, window_labels, 1)
    if found is None:
        return False
    keep, labels, k = found
    cam = np.asarray(embeddings)[keep]
    if second is None:
        return split_ratio(cam, labels) >= ONE_VOICE_RATIO_CAM_ONLY
    if split_ratio(cam, labels, second=np.asarray(second)[keep]) >= ONE_VOICE_RATIO:
        return True
    return k >= 3 and split_ratio(cam, labels) >= CAM_SURE_RATIO


def distinct_voices(
    spans: Sequence[tuple[float, float]],
    embeddings: np.ndarray,
    second: np.ndarray,
    windows: Sequence[tuple[float, float]],
    window_labels: np.ndarray,
) -> bool:
    """Whether every pair of the windows' speakers is clearly two voices on whole spans: the closest
    pair scores below `DISTINCT_RATIO`, and every speaker holds at least `NEW_SPEAKER_SPANS` spans.
    Needs both views (CAM++ alone scores two voices as high as one voice's halves)."""
    found = _spans_by_speaker(spans, windows, window_labels, NEW_SPEAKER_SPANS)
    if found is None:
        return False
    keep, labels, _ = found
    return split_ratio(np.asarray(embeddings)[keep], labels, second=np.asarray(second)[keep]) < DISTINCT_RATIO


def most_distinct_partition(
    spans: Sequence[tuple[float, float]],
    embeddings: np.ndarray,
    second: np.ndarray | None,
    windows: Sequence[tuple[float, float]],
    candidates: Sequence[np.ndarray],
) -> np.ndarray | None:
    """Of window partitions into the same count, the one whose closest pair of speakers is most
    distinct on whole spans (lowest `split_ratio`); None when none gives every speaker a span."""
    best, best_ratio = None, math.inf
    for labels in candidates:
        found = _spans_by_speaker(spans, windows, labels, 1)
        if found is None:
            continue
        keep, span_labels, _ = found
        views = np.asarray(second)[keep] if second is not None else None
        ratio = split_ratio(np.asarray(embeddings)[keep], span_labels, second=views)
        if ratio < best_ratio:
            best, best_ratio = labels, ratio
    return best
