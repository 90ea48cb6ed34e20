"""Local speakers -> the file's speakers: agglomerative clustering of their voice embeddings.

Embeddings are L2-normalised and merged bottom-up by centroid linkage (the distance between two
groups is the Euclidean distance of their mean vectors); merging stops at `THRESHOLD`, calibrated
on real meetings (bench/diarization_eval.py). Only local speakers with at least `MIN_SPEECH_S` of
embedded speech shape the clusters: shorter ones (a backchannel, a cough) carry a noisy voice and
are assigned afterwards to the nearest cluster. A cluster with fewer than `MIN_CLUSTER_SHARE` of
the shaping local speakers is not a speaker of its own either: its members go to the nearest large
cluster too. With an operator's count or bounds, the dendrogram is cut where the number of large
clusters is the wanted one (or the nearest reachable).

Inside one chunk the segmentation model has already said its local speakers are different people,
so they are assigned to different clusters when there are enough (an assignment per chunk that
maximises the total similarity, `scipy.optimize.linear_sum_assignment`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

THRESHOLD = 0.75
MIN_SPEECH_S = 1.0
MIN_CLUSTER_SHARE = 0.0
MAX_SPEAKERS = 20


@dataclass(frozen=True)
class Clusters:
    labels: np.ndarray  # (n,) cluster of each local speaker
    centroids: np.ndarray  # (k, dim) normalised

    @property
    def count(self) -> int:
        return int(self.centroids.shape[0])


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _large_clusters(labels: np.ndarray, min_size: int) -> np.ndarray:
    ids, sizes = np.unique(labels, return_counts=True)
    return ids[sizes >= min_size]


def _cut(tree: np.ndarray, n: int, k: int) -> np.ndarray:
    """Labels after the first n - k merges of the linkage. Centroid linkage can merge at a smaller
    distance than the merge before it, so a cut by distance (fcluster's "maxclust") can skip some
    counts; the merge order never does."""
    parent = np.arange(2 * n - 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for step in range(max(0, n - k)):
        a, b = int(tree[step, 0]), int(tree[step, 1])
        parent[root(a)] = n + step
        parent[root(b)] = n + step
    roots = np.array([root(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def _partition(
    points: np.ndarray, low: int, high: int, threshold: float, min_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, ids of the large clusters) of the shaping points."""
    n = points.shape[0]
    if n == 1:
        return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    tree = linkage(points, method="centroid", metric="euclidean")
    min_size = max(1, round(min_share * n))
    labels = fcluster(tree, threshold, criterion="distance") - 1
    large = _large_clusters(labels, min_size)
    if low <= len(large) <= high:
        return labels, large
    wanted = low if len(large) < low else high
    best = (labels, large)
    for k in range(1, n + 1):  # cut at 1, 2, ... clusters until `wanted` of them are large
        cut = _cut(tree, n, k)
        cut_large = _large_clusters(cut, min_size)
        if abs(len(cut_large) - wanted) < abs(len(best[1]) - wanted):
            best = (cut, cut_large)
        if len(cut_large) >= wanted:
            break
    return best


def cluster_local_speakers(
    embeddings: np.ndarray,
    seconds: np.ndarray,
    chunks: np.ndarray,
    *,
    bounds: tuple[int, int] = (1, MAX_SPEAKERS),
    threshold: float = THRESHOLD,
    min_speech_s: float = MIN_SPEECH_S,
    min_share: float = MIN_CLUSTER_SHARE,
) -> Clusters:
    """Speakers of the local speakers (one embedding row each, with its seconds of speech and its
    chunk), between `bounds` speakers where the embeddings allow."""
    n = embeddings.shape[0]
    if n == 0:
        return Clusters(np.zeros(0, dtype=np.int64), np.zeros((0, embeddings.shape[1]), np.float32))
    points = normalise(np.asarray(embeddings, dtype=np.float64))
    shaping = seconds >= min_speech_s
    if not shaping.any():
        shaping = seconds >= seconds.max()
    low, high = max(1, bounds[0]), max(1, bounds[1])
    labels, large = _partition(points[shaping], low, high, threshold, min_share)
    if large.size == 0:
        large = np.unique(labels)[:1]
    if large.size > high:  # the largest ones when no cut gives exactly `high`
        ids, sizes = np.unique(labels, return_counts=True)
        large = ids[np.argsort(-sizes, kind="stable")][:high]
    shaped = points[shaping]
    centroids = normalise(np.stack([shaped[labels == c].mean(axis=0) for c in large]))
    return Clusters(assign(points, centroids, chunks), centroids.astype(np.float32))


def assign(points: np.ndarray, centroids: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """Each point to its nearest centroid, points of one chunk to different centroids while there are
    enough of them."""
    similarity = points @ centroids.T
    labels = similarity.argmax(axis=1)
    k = centroids.shape[0]
    if k < 2:
        return labels
    order = np.argsort(chunks, kind="stable")
    bounds = np.flatnonzero(np.diff(chunks[order])) + 1
    for group in np.split(order, bounds):
        if 1 < group.size <= k:
            rows, cols = linear_sum_assignment(-similarity[group])
            labels[group[rows]] = cols
    return labels
