"""A cluster that holds two voices: its units split in two the same way however they are sampled.

Two ways a cluster ends up holding two people, both seen on the espeak conversations:

- near twins: some voices are closer to CAM++ than the clustering threshold can tell apart. The
  generator's closest pair (en-us+m3 and en-gb+f2, cosine 0.92 on the same sentence) was one cluster,
  and a conversation between them one speaker (about 50 % DER).
- voices joined through mixed tracks: the segmentation model often keeps several espeak voices on one
  track, and a track's units are one point to the clustering unless they are `TRACK_THRESHOLD` apart
  (clustering.py). Voices 0.41-0.43 apart on average per unit, above the threshold, were joined
  through such points into one cluster: 3-voice conversations came out as one speaker (58-71 % DER),
  although their 2-means halves were only 0.70-0.73 alike.

In both, the units are not a blur: a 2-means split of the cluster's units finds the voices, and finds
them again from any half of the units. One real voice splits too, but mostly not the same way twice:
its halves follow noise (10-minute monologues of real speakers made of the asterisk telephone
prompts of Debian's asterisk-core-sounds packages, about 300 units each: median agreement 0.02 (en),
0.22 (es, the same woman), 0.38 (fr), 0.47 (it)), except where one person was recorded in two places
(the memory bench's recordings of 28 people, each from several source recordings): those split stably,
into halves 0.77-0.79 alike, and `clustering.MERGE_SIMILARITY` (0.75) joins such halves on purpose.
The Russian prompts split stably (0.92) into halves 0.93 alike, along the prompts' families (voicemail
against conference): two sessions or two speakers, not known.

So a cluster with `MIN_UNITS` units of `MIN_SPEECH_S` is split in two when a 2-means split of one
random half of its units predicts the 2-means split of the other half (median adjusted Rand index over
`HALVINGS` halvings) and its halves are either near twins (at least `MIN_SIMILARITY` alike: closer than
any two people measured; agreement at least `MIN_STABILITY`) or less alike than `MERGE_SIMILARITY`
(two people by the clustering's own measure, which its merge step would never have joined; agreement
at least `MIN_STABILITY_APART`: the espeak clusters so split agreed at 1.0, while one real voice
repeated three times, the same 11 s of JFK, agreed at 0.80 with itself, halves 0.74 alike, along its
sentences). Halves of the second kind are tested again, since either may hold near twins (three
voices, two of them the pair, in one cluster); halves of near twins are not (tested again, one of the
pair's conversations came out as 4 speakers and a 4-voice one as 5). Splits stop at the speaker bound.

On the units of the real and espeak sets (bench/diarization_eval.py with its calibration seeds,
without the fast path), clusters of `MIN_UNITS` or more: of the espeak clusters with halves under
0.75 alike, 10 split, all holding 2-3 voices, and none of the 3 holding one; of those with near-twin
halves, 55 of 87 holding two voices split and none of 35 holding one, but 3 of the 48 espeak
monologues diarized in full (without the fast path) split in two; of the real ones (the 7-minute
file, the memory bench's 10- and 30-minute recordings, the monologues above; the AMI excerpts, the
call and the mixed real voices have none so large) only the Russian prompts: halves 0.77-0.79 alike
where stable (1.0 each), and where more alike unstable.
"""

from __future__ import annotations

import numpy as np

from voxdock.engine.diarization.clustering import MERGE_SIMILARITY, MIN_SPEECH_S, Clusters, normalise

# Units of clustering.MIN_SPEECH_S (those that shape clusters): below this a half is too small to split
# reliably.
MIN_UNITS = 16
MIN_STABILITY = 0.5
MIN_STABILITY_APART = 0.9
MIN_SIMILARITY = 0.85
# Near twins are two people only where their halves are heard in the same chunks, as two people in
# conversation are (`heard_together`; see the module's docstring).
MIN_HEARD_TOGETHER = 0.3
# The median over 10 halvings moved by up to +-0.3 from one random draw to the next (a real 10-minute
# monologue: 0.07-0.71 over 20 draws, 0.50 with the fixed seed, split into 2 speakers); over 40 it
# settles (0.47 there, and within 0.05 of the mean of 20 draws of 10 on the espeak pairs measured).
HALVINGS = 40
MAX_TESTED = 200  # units a test looks at (a random sample of a larger cluster): bounded cost
_SEED = 0  # fixed: the same file gives the same speakers every time


def split_two_voices(
    embeddings: np.ndarray,
    seconds: np.ndarray,
    clusters: Clusters,
    high: int,
    chunks: np.ndarray | None = None,
) -> Clusters:
    """`clusters` with each cluster that holds two voices split in two (see the module's docstring),
    at most `high` clusters in all. `chunks` (per unit, the chunk it was heard in): near twins are
    split only where their halves are heard in the same chunks (`heard_together`)."""
    if len(clusters.labels) < MIN_UNITS:
        return clusters
    points = normalise(np.asarray(embeddings, dtype=np.float64))
    labels = clusters.labels.copy()
    centroids = [c.astype(np.float64) for c in clusters.centroids]
    untested = list(range(clusters.count))
    while untested and len(centroids) < high:
        cluster = untested.pop(0)
        members = np.flatnonzero(labels == cluster)
        halves = _two_voices(points[members], seconds[members])
        if halves is None:
            continue
        parts, pair = halves
        alike = float(pair[0] @ pair[1])
        twins = alike >= MIN_SIMILARITY
        if twins and chunks is not None and heard_together(chunks[members], parts) < MIN_HEARD_TOGETHER:
            continue
        labels[members[parts == 1]] = len(centroids)
        centroids[cluster] = pair[0]
        centroids.append(pair[1])
        if alike < MERGE_SIMILARITY:  # two people apart: either may hold near twins
            untested += [cluster, len(centroids) - 1]
    if len(centroids) == clusters.count:
        return clusters
    return Clusters(labels, np.stack(centroids).astype(np.float32))


def heard_together(chunks: np.ndarray, parts: np.ndarray) -> float:
    """Of the chunks the smaller half of a split is heard in, the share where the other half is heard
    too: about 1 for two people in conversation, near 0 for one voice split by when it was recorded."""
    first, second = set(chunks[parts == 0].tolist()), set(chunks[parts == 1].tolist())
    return len(first & second) / max(min(len(first), len(second)), 1)


def holds_two_voices(embeddings: np.ndarray, seconds: np.ndarray) -> bool:
    """Whether these units (one embedding row each, with its seconds of speech) hold two voices by the
    module's rule."""
    return _two_voices(normalise(np.asarray(embeddings, dtype=np.float64)), seconds) is not None


def _two_voices(points: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(half of each point, the two halves' normalised centroids) when the points hold two voices,
    else None."""
    shaping = np.flatnonzero(seconds >= MIN_SPEECH_S)
    if shaping.size < MIN_UNITS:
        return None
    rng = np.random.default_rng(_SEED)
    _, pair = two_means(points[shaping], rng, starts=10)
    alike = float(pair[0] @ pair[1])
    if MERGE_SIMILARITY <= alike < MIN_SIMILARITY:  # the cheaper test first
        return None
    needed = MIN_STABILITY if alike >= MIN_SIMILARITY else MIN_STABILITY_APART
    if stability(points[rng.permutation(shaping)[:MAX_TESTED]], rng) < needed:
        return None
    return (points @ pair.T).argmax(axis=1), pair


def stability(points: np.ndarray, rng: np.random.Generator, halvings: int = HALVINGS) -> float:
    """Median adjusted Rand index between the 2-means split of one random half of the (normalised)
    points and the split of the other half that the first half's centroids give: 1 where the same two
    groups are found whichever half is looked at, about 0 where a split follows noise."""
    n = points.shape[0]
    agreement = []
    for _ in range(halvings):
        order = rng.permutation(n)
        first, second = points[order[: n // 2]], points[order[n // 2 :]]
        _, centres = two_means(first, rng)
        own, _ = two_means(second, rng)
        agreement.append(adjusted_rand_index((second @ centres.T).argmax(axis=1), own))
    return float(np.median(agreement))


def two_means(
    points: np.ndarray, rng: np.random.Generator, starts: int = 5, iterations: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """(group of each point, the two normalised centres) of spherical 2-means on normalised points:
    the tightest of `starts` runs, each seeded k-means++ style (the second centre drawn far from the
    first). Written out rather than scikit-learn's KMeans: this is called twice per halving (80 times
    per cluster tested), where KMeans' per-call checks took twice the time of the work (bench host CPU on the
    espeak sets 43 s per audio hour, against an aim of 40); and without numpy's convenience calls in
    its loop (mean, allclose), whose overhead was most of its time: the same answers to the bit."""
    n = points.shape[0]
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(starts):
        first = points[rng.integers(n)]
        far = np.maximum(1.0 - points @ first, 0.0) ** 2
        second = points[rng.choice(n, p=far / far.sum())] if far.sum() > 0 else points[rng.integers(n)]
        centres = np.stack([first, second])
        for _ in range(iterations):
            likeness = points @ centres.T
            second_group = likeness[:, 1] > likeness[:, 0]  # argmax: a tie goes to the first centre
            count = int(second_group.sum())
            if count in (0, n):
                break
            # The groups' means, as mean(axis=0) would give them, without its per-call overhead.
            sums = np.stack([points[~second_group].sum(axis=0), points[second_group].sum(axis=0)])
            moved = normalise(sums / np.array([[n - count], [count]], dtype=np.float64))
            if (np.abs(moved - centres) <= 1e-8 + 1e-5 * np.abs(centres)).all():  # np.allclose's test
                break
            centres = moved
        likeness = points @ centres.T
        spread = float((1.0 - likeness.max(axis=1)).sum())
        if best is None or spread < best[0]:
            best = (spread, likeness.argmax(axis=1), centres)
    assert best is not None
    return best[1], best[2]


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of two splits into groups 0 and 1, corrected for chance (Hubert and Arabie): 1 when
    they are the same split, about 0 when unrelated; 0 when either puts everything in one group."""
    table = np.zeros((2, 2))
    np.add.at(table, (a, b), 1.0)

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1.0) / 2.0).sum())

    rows, columns = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    total = a.shape[0] * (a.shape[0] - 1) / 2.0
    expected = rows * columns / max(total, 1.0)
    ceiling = (rows + columns) / 2.0
    if ceiling == expected:
        return 0.0
    return (pairs(table) - expected) / (ceiling - expected)
