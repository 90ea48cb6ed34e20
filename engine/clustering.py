"""Speaker clustering of window embeddings (CAM++ space), with a calibrated speaker-count estimate.

Input: one L2-normalisable embedding per analysis window, in time order. Output: one integer label
per window, 0..k-1, numbered by first appearance.

Speaker count: average-linkage agglomerative clustering on cosine similarity, stopped when the two
closest clusters are less similar than a threshold calibrated on CAM++ windows. A known count
(`num_speakers`) or bounds (`min_speakers`/`max_speakers`) override the stopping rule exactly, as far
as the number of windows allows.

After the count is fixed the labels are refined: each window goes to the nearest speaker centroid
(a few rounds), so early merge mistakes of the hierarchy do not stick.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

# Average-linkage stopping threshold: clusters whose mean pairwise cosine similarity is below this
# are different speakers (CAM++, 1.5 s windows).
MERGE_THRESHOLD = 0.45
REFINE_ROUNDS = 3


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    out = np.empty_like(labels)
    mapping: dict[int, int] = {}
    for i, lab in enumerate(labels.tolist()):
        if lab not in mapping:
            mapping[lab] = len(mapping)
        out[i] = mapping[lab]
    return out


def _bounds(n: int, num: int | None, lo: int | None, hi: int | None) -> tuple[int, int]:
    if num is not None:
        k = max(1, min(int(num), n))
        return k, k
    low = max(1, int(lo) if lo is not None else 1)
    high = int(hi) if hi is not None else n
    high = max(1, min(high, n))
    low = min(low, high)
    return low, high


def _refine(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Reassign each window to its nearest centroid, keeping exactly k non-empty clusters."""
    for _ in range(REFINE_ROUNDS):
        centroids = _normalise(np.stack([x[labels == c].mean(axis=0) for c in range(k)]))
        new = np.argmax(x @ centroids.T, axis=1)
        if len(np.unique(new)) < k:
            break
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def cluster_speakers(
    embeddings: np.ndarray,
    *,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    threshold: float = MERGE_THRESHOLD,
) -> np.ndarray:
    """One label per embedding (row). Honours a known count or bounds exactly (capped at the row count)."""
    n = int(embeddings.shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    x = _normalise(np.asarray(embeddings, dtype=np.float64))
    low, high = _bounds(n, num_speakers, min_speakers, max_speakers)
    sim = np.clip(x @ x.T, -1.0, 1.0)
    dist = 1.0 - sim
    np.fill_diagonal(dist, 0.0)
    tree = linkage(squareform(dist, checks=False), method="average")
    # Merge heights in increasing order; stopping at similarity `threshold` leaves this many clusters.
    heights = tree[:, 2]
    k = int(n - np.searchsorted(heights, 1.0 - threshold, side="right"))
    k = min(max(k, low), high)
    labels = fcluster(tree, t=k, criterion="maxclust") - 1
    k = len(np.unique(labels))
    labels = _refine(x, labels.astype(np.int64), k)
    return _relabel_by_first_appearance(labels)
