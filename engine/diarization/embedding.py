"""Voice embeddings of local speakers: CAM++ over the units of each local speaker's track.

For every chunk the segmentation model found a speaker in, that local speaker's track is cut at its
pauses of `RUN_GAP_S` or more into units, and each unit's frames where the speaker talks alone
(overlapped frames carry two voices) are gathered from the file's filterbank and embedded together
with CAM++, mean-normalised over those frames as CAM++ was trained. When a unit has less than
`MIN_CLEAN_S` of speech alone, all its frames are used; a run too short to embed
(`MIN_UNIT_FRAMES`) goes with its nearest embedded neighbour, and a track with no run long enough is
embedded whole. Cutting at pauses matters because the model often gives two voices taking turns one
track: on the mixed real voices the share of embedded speech in units less than 80% one speaker fell
from 21% (whole tracks) to 9%, on espeak conversations from 50% to 12% (the AMI excerpts, with
overlap and backchannels inside turns, stay at about half). The clustering joins a track's units
again where their voices agree (clustering.py). Giving CAM++ only the speaker's own frames matters
on real meetings too: embedding the whole chunk and pooling the speaker's frames out of it
(pyannote's way with WeSpeaker) lets the other voices in through CAM++'s context-aware masking, and
it separated the AMI excerpts' speakers less well (equal-error rate 0.28 vs 0.26 on pairs of local
speakers).

Cost: a chunk's speakers together cover about the chunk's speech, so with chunks every 5 s each
second of speech is embedded about twice, whatever the units. Lengths are cut down to a multiple of
`LENGTH_GRID` frames (centred), because CAM++ pools over every frame it gets and so cannot pad:
equal lengths share a model call, and across files in flight most calls are full. The filterbank is
computed by torch on the model's device, for one block of chunks at a time, so memory does not grow
with the file.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxdock.engine.batching import SharedBatcher
from voxdock.engine.diarization.clustering import pool
from voxdock.engine.diarization.segmentation import (
    CHUNK_FRAMES,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    ChunkSegmentation,
)
from voxdock.engine.fbank import FRAME_LENGTH, FRAME_SHIFT, fbank_tensor
from voxdock.engine.oom import AdaptiveBatch, FaultInjector, retry_after_release
from voxdock.engine.voice import VoiceEncoder

MIN_CLEAN_S = 0.5
MIN_UNIT_FRAMES = 50  # 0.5 s of fbank frames: less carries too little of a voice to embed
LENGTH_GRID = 50
# A local speaker's track is cut into units at its pauses of at least this long: the segmentation
# model often lumps two voices taking turns into one local speaker, and a unit that mixes voices
# sits between them (see the module docstring).
RUN_GAP_S = 0.25
RUN_GAP_FRAMES = round(RUN_GAP_S * SAMPLE_RATE / FRAME_SAMPLES)


@dataclass
class LocalSpeakers:
    """The embedded units of a file's local speakers, one row each: a unit is one stretch of a local
    speaker's track in a chunk and stands for the chunk frames [first, last) of that track."""

    chunk: np.ndarray  # (n,) chunk index
    local: np.ndarray  # (n,) local speaker index in its chunk (0-2)
    seconds: np.ndarray  # (n,) speech embedded, in seconds
    embeddings: np.ndarray  # (n, dim) CAM++ embeddings
    first: np.ndarray  # (n,) first chunk frame the unit stands for
    last: np.ndarray  # (n,) one past its last

    @classmethod
    def empty(cls, dim: int) -> LocalSpeakers:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none.copy(), np.zeros(0), np.zeros((0, dim), np.float32), none.copy(), none.copy())

    def __len__(self) -> int:
        return int(self.chunk.shape[0])

    @staticmethod
    def concat(parts: Sequence[LocalSpeakers], dim: int) -> LocalSpeakers:
        if not parts:
            return LocalSpeakers.empty(dim)
        return LocalSpeakers(
            np.concatenate([p.chunk for p in parts]),
            np.concatenate([p.local for p in parts]),
            np.concatenate([p.seconds for p in parts]),
            np.concatenate([p.embeddings for p in parts]),
            np.concatenate([p.first for p in parts]),
            np.concatenate([p.last for p in parts]),
        )

    @property
    def track(self) -> np.ndarray:
        """(n,) the local speaker track of each unit: its chunk and local speaker as one number."""
        return self.chunk * 3 + self.local

    def per_track(self) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, seconds) of each track: its units pooled by `clustering.pool`."""
        _, inverse = np.unique(self.track, return_inverse=True)
        return pool(self.embeddings, self.seconds, inverse.reshape(-1))


class UnitEmbedder:
    """CAM++ for feature arrays of equal length, shared by every diarize worker (one `SharedBatcher`:
    units of all files in flight go in the same calls)."""

    def __init__(
        self, voice: VoiceEncoder, batch: AdaptiveBatch, faults: FaultInjector | None = None
    ) -> None:
        self.voice = voice
        self._faults = faults
        self._batcher: SharedBatcher[Any, np.ndarray] = SharedBatcher(
            self._run, batch, group=lambda feats: int(feats.shape[0])
        )

    @property
    def device(self) -> Any:
        return self.voice.device

    @property
    def batcher(self) -> SharedBatcher[Any, np.ndarray]:
        return self._batcher

    def _run(self, feats: Sequence[Any]) -> list[np.ndarray]:
        if self._faults is not None:
            self._faults.check("diarize", len(feats))
        return list(self.voice.embed_equal_length(feats))

    def embed(self, feats: Sequence[Any]) -> np.ndarray:
        """(n, dim) embeddings of (frames, 80) feature tensors (mean-normalised, on the device)."""
        out = self._batcher.map(list(feats))
        return np.stack(out) if out else np.zeros((0, self.voice.dim), np.float32)


def _crop_to_grid(index: np.ndarray) -> np.ndarray:
    """The middle of `index`, its length cut down to a multiple of `LENGTH_GRID`."""
    length = (index.shape[0] // LENGTH_GRID) * LENGTH_GRID
    start = (index.shape[0] - length) // 2
    return index[start : start + length]


def neighbour_runs(offsets: np.ndarray) -> list[list[int]]:
    """Positions in `offsets` (sorted chunk starts) grouped into runs of chunks that overlap or touch:
    one filterbank per run never covers the silence between distant chunks."""
    runs: list[list[int]] = []
    for i, offset in enumerate(offsets.tolist()):
        if runs and offset - int(offsets[runs[-1][-1]]) <= CHUNK_FRAMES:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def track_runs(track: np.ndarray, gap: int = RUN_GAP_FRAMES) -> list[tuple[int, int]]:
    """[first, last) frame ranges of the runs of True in `track`, runs less than `gap` frames apart
    joined."""
    index = np.flatnonzero(track)
    if index.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(index) >= gap) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(index, cuts)]


def unit_spans(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The chunk frames each run stands for: the whole chunk, cut midway between neighbouring runs
    (frames of the track in a run too short to embed go with the nearest embedded one)."""
    cuts = [(b + a) // 2 for (_, b), (a, _) in itertools.pairwise(runs)]
    return list(zip([0, *cuts], [*cuts, CHUNK_FRAMES], strict=True))


def _chunk_units(
    samples: np.ndarray, seg: ChunkSegmentation, chunks: list[int], device: Any
) -> tuple[list[tuple[int, int, int, int, int]], list[Any]]:
    """(chunk, local speaker, frames, first, last) and the mean-normalised features of each unit of
    `chunks`, neighbours whose audio one filterbank covers."""
    import torch

    offsets = seg.offsets[chunks]
    first = int(offsets.min()) * FRAME_SAMPLES
    last = min(
        int(offsets.max()) * FRAME_SAMPLES + CHUNK_FRAMES * FRAME_SAMPLES + FRAME_LENGTH, samples.shape[0]
    )

    def features() -> Any:
        with torch.inference_mode():
            audio = torch.from_numpy(np.ascontiguousarray(samples[first:last], dtype=np.float32))
            return fbank_tensor(audio.to(device))

    feats = retry_after_release(features)  # CAM++'s own calls back off in the embedder's batcher
    # The file-grid frame of each filterbank frame's centre.
    centres = first + np.arange(feats.shape[0]) * FRAME_SHIFT + FRAME_LENGTH // 2
    grid = centres // FRAME_SAMPLES
    activity = seg.local_activity(chunks)  # (chunks, 589, 3)
    min_clean = int(MIN_CLEAN_S * 100)
    rows: list[tuple[int, int, int, int, int]] = []
    inputs: list[Any] = []

    def unit_index(lo: int, active: np.ndarray, alone: np.ndarray) -> np.ndarray:
        mask = alone if alone.sum() >= min_clean else active
        return _crop_to_grid(lo + np.flatnonzero(mask))

    for row, chunk in enumerate(chunks):
        offset = int(seg.offsets[chunk])
        lo, hi = int(np.searchsorted(grid, offset)), int(np.searchsorted(grid, offset + CHUNK_FRAMES))
        local = grid[lo:hi] - offset  # chunk frame of each filterbank frame
        active = activity[row][local]  # (fbank frames of the chunk, 3)
        alone = active & (active.sum(axis=1, keepdims=True) == 1)
        for speaker in range(active.shape[1]):
            found: list[tuple[np.ndarray, tuple[int, int]]] = []
            for a, b in track_runs(activity[row][:, speaker]):
                inside = (local >= a) & (local < b)
                index = unit_index(lo, active[:, speaker] & inside, alone[:, speaker] & inside)
                if index.shape[0] >= MIN_UNIT_FRAMES:
                    found.append((index, (a, b)))
            if not found:  # no run long enough alone: the whole track, as one unit
                index = unit_index(lo, active[:, speaker], alone[:, speaker])
                if index.shape[0] < MIN_UNIT_FRAMES:
                    continue
                found = [(index, (0, CHUNK_FRAMES))]
            for (index, _), (a, b) in zip(found, unit_spans([run for _, run in found]), strict=True):
                with torch.inference_mode():
                    unit = feats[torch.from_numpy(index).to(feats.device)]
                    unit = unit - unit.mean(dim=0, keepdim=True)
                inputs.append(unit)
                rows.append((chunk, speaker, index.shape[0], a, b))
    return rows, inputs


def embed_local_speakers(
    samples: np.ndarray,
    seg: ChunkSegmentation,
    chunks: Sequence[int],
    embedder: UnitEmbedder,
) -> LocalSpeakers:
    """Embed the local speakers of the given chunks (a block: its runs of neighbouring chunks each
    get one filterbank, and all its speakers go to the model together)."""
    dim = embedder.voice.dim
    chunks = sorted(int(c) for c in chunks)
    rows: list[tuple[int, int, int, int, int]] = []
    inputs: list[Any] = []
    for run in neighbour_runs(seg.offsets[chunks]):
        run_rows, run_inputs = _chunk_units(samples, seg, [chunks[i] for i in run], embedder.device)
        rows += run_rows
        inputs += run_inputs
    if not rows:
        return LocalSpeakers.empty(dim)
    embeddings = embedder.embed(inputs)
    table = np.asarray(rows, dtype=np.int64)
    return LocalSpeakers(table[:, 0], table[:, 1], table[:, 2] / 100.0, embeddings, table[:, 3], table[:, 4])
