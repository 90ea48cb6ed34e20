"""Speaker clustering of window embeddings (CAM++ space), with a calibrated speaker-count estimate.

Input: one embedding per analysis window, in time order, and optionally the id of the speech region
(a stretch of speech between pauses) each window lies in. Output: one label per window, 0..k-1,
numbered by first appearance.

How it works:

1. Embeddings are L2-normalised and *centred on the file's mean*. Voices in one recording share a
   lot (channel, language, synthesis engine): subtracting the mean removes that common part and turns
   small differences between similar voices into large angles. With CAM++ on two similar espeak
   voices the raw cosine is 0.78 within a speaker and 0.72 across; centred it is +0.1 vs -0.15.
2. For every candidate count k (1..max) two partitions are built in the centred space, spectral
   clustering on a k-nearest-neighbour pruned affinity (normalised Laplacian) and average-linkage
   agglomeration, each polished by nearest-centroid reassignment; the one with the tighter clusters
   is kept.
3. The count grows from 1 while the next partition still looks like different voices: for its two
   closest speakers, the mean cross-pair cosine over the geometric mean of their mean within-pair
   cosines (raw CAM++ space; unbiased by cluster size) is below `split_confident`, or below
   `split_threshold` *and* the smallest speaker holds enough windows *and* the split follows the
   pauses (at least `min_consistency` of the windows agree with the majority label of their speech
   region: one voice per stretch of speech is what a conversation looks like, a content-driven split
   of one voice is not); no cluster may be tiny.
   The thresholds were calibrated on synthetic conversations and monologues (seeds kept apart from
   the reported ones) and the real pyannote sample; see bench/diarization_eval.py.
4. A known count (`num_speakers`) or bounds (`min_speakers` / `max_speakers`) replace the estimate
   exactly (capped at the number of windows).

`smooth_labels` then re-segments the windows with a Viterbi pass over speaker centroids with a
switching penalty, which removes isolated one-window flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

# Calibrated on CAM++ 1.5 s windows (bench/diarization_eval.py, calibration seeds).
SPLIT_CONFIDENT = 0.80  # closest pair ratio below this: different speakers, whatever the timing
SPLIT_THRESHOLD = 0.94  # below this, different speakers when the split follows the pauses...
MIN_CONSISTENCY = 0.85
MIN_SHARE_FACTOR = 0.5  # ... and the smallest speaker has at least 0.5/k of the windows
MIN_EVIDENCE_WINDOWS = 15  # ... and at least 15 windows (about 9 s of speech)
MIN_CLUSTER_WINDOWS = 3
MIN_CLUSTER_SHARE = 0.04
MAX_SPEAKERS = 8
PRUNE_SHARE = 0.25  # spectral affinity keeps each window's nearest quarter
REFINE_ROUNDS = 10
SWITCH_PENALTY = 0.15  # Viterbi cost of a speaker change inside one speech region


@dataclass
class ClusteringResult:
    labels: np.ndarray
    num_speakers: int
    # Per candidate k >= 2: (closest-centroid cosine, region consistency, smallest cluster share).
    diagnostics: dict[int, tuple[float, float, float]] = field(default_factory=dict)


def normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    out = np.empty_like(labels)
    mapping: dict[int, int] = {}
    for i, lab in enumerate(labels.tolist()):
        if lab not in mapping:
            mapping[lab] = len(mapping)
        out[i] = mapping[lab]
    return out


def _centroids(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return normalise(np.stack([x[labels == c].mean(axis=0) for c in range(k)]))


def _refine(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Nearest-centroid reassignment (spherical k-means) that never empties a cluster."""
    for _ in range(REFINE_ROUNDS):
        new = np.argmax(x @ _centroids(x, labels, k).T, axis=1)
        if len(np.unique(new)) < k or np.array_equal(new, labels):
            break
        labels = new
    return labels


def _objective(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    c = _centroids(x, labels, k)
    return float(np.sum(x * c[labels]))


def _kmeans_rows(u: np.ndarray, k: int) -> np.ndarray:
    """Deterministic k-means on rows of `u`: farthest-point seeding, then Lloyd iterations."""
    seeds = [int(np.argmax(np.linalg.norm(u - u.mean(axis=0), axis=1)))]
    for _ in range(1, k):
        d = np.min(np.linalg.norm(u[:, None, :] - u[seeds][None, :, :], axis=2), axis=1)
        seeds.append(int(np.argmax(d)))
    centres = u[seeds].copy()
    labels = np.zeros(u.shape[0], dtype=np.int64)
    for _ in range(50):
        d = np.linalg.norm(u[:, None, :] - centres[None, :, :], axis=2)
        new = np.argmin(d, axis=1)
        if np.array_equal(new, labels) and _ > 0:
            break
        labels = new
        for c in range(k):
            if np.any(labels == c):
                centres[c] = u[labels == c].mean(axis=0)
    return labels


def _spectral_partitions(sim: np.ndarray, max_k: int) -> dict[int, np.ndarray]:
    n = sim.shape[0]
    keep = max(3, int(PRUNE_SHARE * n))
    order = np.argsort(-sim, axis=1)[:, :keep]
    aff = np.zeros_like(sim)
    np.put_along_axis(aff, order, np.take_along_axis(sim, order, axis=1), axis=1)
    aff = np.maximum((aff + aff.T) / 2, 0.0)
    np.fill_diagonal(aff, 0.0)
    inv = 1.0 / np.sqrt(np.maximum(aff.sum(axis=1), 1e-9))
    lap = np.eye(n) - inv[:, None] * aff * inv[None, :]
    _, vecs = np.linalg.eigh(lap)
    out = {}
    for k in range(2, max_k + 1):
        out[k] = _kmeans_rows(normalise(vecs[:, :k]), k)
    return out


def _closest_pair(sim: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Highest between-speaker similarity ratio: mean cross-pair cosine over the geometric mean of the
    two clusters' mean within-pair cosines (diagonal excluded), so cluster size does not bias it."""
    within = np.zeros(k)
    members = [np.flatnonzero(labels == c) for c in range(k)]
    for c, idx in enumerate(members):
        m = idx.size
        block = sim[np.ix_(idx, idx)]
        within[c] = (block.sum() - np.trace(block)) / max(m * (m - 1), 1) if m > 1 else 1.0
    best = -1.0
    for i in range(k):
        for j in range(i + 1, k):
            cross = float(sim[np.ix_(members[i], members[j])].mean())
            best = max(best, cross / np.sqrt(max(within[i] * within[j], 1e-9)))
    return best


def _region_consistency(labels: np.ndarray, groups: np.ndarray | None) -> float:
    if groups is None:
        return 1.0
    agree = 0
    for g in np.unique(groups):
        counts = np.bincount(labels[groups == g])
        agree += int(counts.max())
    return agree / len(labels)


def _bounds(n: int, num: int | None, lo: int | None, hi: int | None) -> tuple[int, int]:
    if num is not None:
        k = max(1, min(int(num), n))
        return k, k
    low = max(1, int(lo) if lo is not None else 1)
    high = int(hi) if hi is not None else MAX_SPEAKERS
    high = max(1, min(high, n))
    return min(low, high), high


def cluster_speakers(
    embeddings: np.ndarray,
    groups: Sequence[int] | np.ndarray | None = None,
    *,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    split_confident: float = SPLIT_CONFIDENT,
    split_threshold: float = SPLIT_THRESHOLD,
    min_consistency: float = MIN_CONSISTENCY,
) -> ClusteringResult:
    """Cluster window embeddings into speakers; `groups` is the speech-region id of each window."""
    n = int(embeddings.shape[0])
    if n == 0:
        return ClusteringResult(np.zeros(0, dtype=np.int64), 0)
    low, high = _bounds(n, num_speakers, min_speakers, max_speakers)
    if n == 1 or high == 1:
        return ClusteringResult(np.zeros(n, dtype=np.int64), 1)
    x = normalise(np.asarray(embeddings, dtype=np.float64))
    centred = normalise(x - x.mean(axis=0))
    group_ids = None if groups is None else np.asarray(groups)
    sim = np.clip(centred @ centred.T, -1.0, 1.0)
    raw_sim = x @ x.T
    max_k = high
    spectral = _spectral_partitions(sim, max_k)
    tree = linkage(squareform(np.clip(1.0 - sim, 0.0, None), checks=False), method="average")

    partitions: dict[int, np.ndarray] = {1: np.zeros(n, dtype=np.int64)}
    diagnostics: dict[int, tuple[float, float, float]] = {}
    for k in range(2, max_k + 1):
        best: np.ndarray | None = None
        best_score = -np.inf
        for cand in (spectral[k], fcluster(tree, t=k, criterion="maxclust") - 1):
            cand = np.asarray(cand, dtype=np.int64)
            if len(np.unique(cand)) != k:
                continue
            cand = _refine(centred, cand, k)
            if len(np.unique(cand)) != k:
                continue
            score = _objective(centred, cand, k)
            if score > best_score:
                best, best_score = cand, score
        if best is None:
            break
        partitions[k] = best
        share = float(np.bincount(best, minlength=k).min()) / n
        diagnostics[k] = (_closest_pair(raw_sim, best, k), _region_consistency(best, group_ids), share)

    def looks_split(k: int) -> bool:
        closest, consistency, share = diagnostics[k]
        if share * n < MIN_CLUSTER_WINDOWS or share < MIN_CLUSTER_SHARE:
            return False
        if closest < split_confident:
            return True
        return (
            closest < split_threshold
            and consistency >= min_consistency
            and share >= MIN_SHARE_FACTOR / k
            and share * n >= MIN_EVIDENCE_WINDOWS
        )

    available = sorted(partitions)
    if low == high:
        k = max(kk for kk in available if kk <= low)
    else:
        k = 1  # the largest k reached by accepted splits, stopping at the first rejected one
        for kk in range(2, max(available) + 1):
            if kk not in diagnostics or not looks_split(kk):
                break
            k = kk
        k = min(max(k, low), max(available))
    labels = relabel_by_first_appearance(partitions[k])
    return ClusteringResult(labels, len(np.unique(labels)), diagnostics)


def smooth_labels(
    embeddings: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[int] | np.ndarray | None = None,
    *,
    penalty: float = SWITCH_PENALTY,
) -> np.ndarray:
    """Re-segment: Viterbi over the windows (time order) with per-speaker centroid scores.

    A change of speaker inside one speech region costs `penalty` (cosine units); across a pause it
    is free. The speaker set is kept (a speaker is never dropped: if it would vanish the input labels
    are returned).
    """
    k = int(labels.max()) + 1 if labels.size else 0
    if k <= 1 or labels.size < 3:
        return labels
    x = normalise(np.asarray(embeddings, dtype=np.float64))
    centred = normalise(x - x.mean(axis=0))
    scores = centred @ _centroids(centred, labels, k).T  # (n, k)
    n = scores.shape[0]
    group_ids = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    back = np.zeros((n, k), dtype=np.int64)
    total = scores[0].copy()
    for i in range(1, n):
        cost = penalty if group_ids[i] == group_ids[i - 1] else 0.0
        stay = total
        best_prev = int(np.argmax(total))
        switch = total[best_prev] - cost
        take_switch = switch > stay
        back[i] = np.where(take_switch, best_prev, np.arange(k))
        total = np.where(take_switch, switch, stay) + scores[i]
    path = np.zeros(n, dtype=np.int64)
    path[-1] = int(np.argmax(total))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    if len(np.unique(path)) < k:
        return labels
    return path
