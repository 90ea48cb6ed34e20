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
again where their voices agree (clustering.py).

A unit can still hold two voices: the model gives one track to two people who answer each other
after a pause shorter than `RUN_GAP_S`, and then the whole unit goes to one of them. So a unit longer
than `PIECE_S` is also embedded in pieces of at most that length, which the clustering does not see
(a whole unit's embedding separates voices better than its pieces' averaged: with the pieces pooled
the real call came out as one speaker) but which may each go to another speaker afterwards
(refinement.py). A piece's embedding first comes from its unit's own CAM++ pass, its frame-level
features pooled over the piece's frames (`VoiceEncoder.embed_with_pieces`: no model call). CAM++'s
context-aware masking sees the whole unit there, which draws a piece of another voice towards the
unit's (a card reader's 1.2 s answer inside a reader's unit came out no nearer the card reader than
the reader: tests/test_voice.py), so on its own that lost much of the pieces' gain (the mixed real
voices 4.5 % DER against 3.1 % with every piece embedded alone). But such a piece is still less like
its unit than the others: a piece whose embedding from the pass is less like its unit's than
`PIECE_ALONE_BELOW` is embedded again, alone. On the real sets and the memory bench's recordings
(2026-12-03), below 0.85 were 20 % of the pieces and 30 of the 32 that moved when every piece was
embedded alone (the other two at 0.86 and 0.87). Giving CAM++ only the speaker's own frames matters
on real meetings too: embedding the whole chunk and pooling the speaker's frames out of it
(pyannote's way with WeSpeaker) lets the other voices in through CAM++'s context-aware masking, and
it separated the AMI excerpts' speakers less well (equal-error rate 0.28 vs 0.26 on pairs of local
speakers).

Cost: a chunk's speakers together cover about the chunk's speech, so with chunks every 5 s each
second of speech is embedded about twice, whatever the units. From 63 % of the embedded speech of
the espeak conversations to 86 % of the AMI excerpts' lies in units longer than `PIECE_S`, and every
piece embedded alone added 70 % to the units' CAM++ work on the real sets; with only the pieces unlike
their unit alone (124 of 822 there), the diarizer takes 1.08-1.14x the time it takes without pieces on
a 2-core CPU, against 1.40x (bench/diarization_pieces.py). Lengths are cut down to a multiple of
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
# A unit longer than this is also embedded in pieces of at most this length (the module docstring).
# Pieces of 2 s against 3 and 5 s on the real sets (bench/diarization_eval.py; 3 and 5 s in
# brackets): the mixed real voices 5.1 -> 2.9 % DER (3.4, 4.2), the 7-minute file 18.9 -> 17.5 %
# (18.9, 18.7), the AMI excerpts 15.0 -> 14.9 % (14.9, 15.2), the call 3.3 % (3.3, 3.3).
PIECE_S = 2.0
PIECE_FRAMES = round(PIECE_S * SAMPLE_RATE / FRAME_SAMPLES)
# A piece is embedded from its unit's own pass (no model call) and, where that embedding is less like
# the unit's than this, once more alone (see the module docstring).
PIECE_ALONE_BELOW = 0.85


@dataclass
class Pieces:
    """The pieces of the units longer than `PIECE_S`, one row each: a piece stands for the chunk
    frames [first, last) of its unit's track, and the pieces of a unit cover exactly its frames."""

    unit: np.ndarray  # (m,) the unit (row of `LocalSpeakers`) the piece is part of
    seconds: np.ndarray  # (m,) speech embedded, in seconds
    embeddings: np.ndarray  # (m, dim) CAM++ embeddings
    first: np.ndarray  # (m,) first chunk frame the piece stands for
    last: np.ndarray  # (m,) one past its last
    alone: np.ndarray  # (m,) bool: embedded alone (else from its unit's pass: `PIECE_ALONE_BELOW`)

    @classmethod
    def empty(cls, dim: int) -> Pieces:
        none = np.zeros(0, dtype=np.int64)
        return cls(
            none, np.zeros(0), np.zeros((0, dim), np.float32), none.copy(), none.copy(), np.zeros(0, bool)
        )

    def __len__(self) -> int:
        return int(self.unit.shape[0])


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
    pieces: Pieces  # of the units longer than PIECE_S

    @classmethod
    def empty(cls, dim: int) -> LocalSpeakers:
        none = np.zeros(0, dtype=np.int64)
        return cls(
            none,
            none.copy(),
            np.zeros(0),
            np.zeros((0, dim), np.float32),
            none.copy(),
            none.copy(),
            Pieces.empty(dim),
        )

    def __len__(self) -> int:
        return int(self.chunk.shape[0])

    @staticmethod
    def concat(parts: Sequence[LocalSpeakers], dim: int) -> LocalSpeakers:
        if not parts:
            return LocalSpeakers.empty(dim)
        starts = np.cumsum([0, *(len(p) for p in parts[:-1])])  # each part's first unit, once joined
        pieces = Pieces(
            np.concatenate([p.pieces.unit + start for p, start in zip(parts, starts.tolist(), strict=True)]),
            np.concatenate([p.pieces.seconds for p in parts]),
            np.concatenate([p.pieces.embeddings for p in parts]),
            np.concatenate([p.pieces.first for p in parts]),
            np.concatenate([p.pieces.last for p in parts]),
            np.concatenate([p.pieces.alone for p in parts]),
        )
        return LocalSpeakers(
            np.concatenate([p.chunk for p in parts]),
            np.concatenate([p.local for p in parts]),
            np.concatenate([p.seconds for p in parts]),
            np.concatenate([p.embeddings for p in parts]),
            np.concatenate([p.first for p in parts]),
            np.concatenate([p.last for p in parts]),
            pieces,
        )

    @property
    def track(self) -> np.ndarray:
        """(n,) the local speaker track of each unit: its chunk and local speaker as one number."""
        return self.chunk * 3 + self.local

    def per_track(self) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, seconds) of each track: its units pooled by `clustering.pool`."""
        _, inverse = np.unique(self.track, return_inverse=True)
        return pool(self.embeddings, self.seconds, inverse.reshape(-1))


@dataclass(frozen=True)
class UnitFeatures:
    """A unit's mean-normalised (frames, 80) features (on the model's device), and its pieces: each
    the positions of its frames in them."""

    features: Any
    pieces: tuple[np.ndarray, ...] = ()


class UnitEmbedder:
    """CAM++ for units' features, shared by every diarize worker (one `SharedBatcher`: units of equal
    length of all files in flight go in the same calls)."""

    def __init__(
        self, voice: VoiceEncoder, batch: AdaptiveBatch, faults: FaultInjector | None = None
    ) -> None:
        self.voice = voice
        self._faults = faults
        self._batcher: SharedBatcher[UnitFeatures, np.ndarray] = SharedBatcher(
            self._run, batch, group=lambda unit: int(unit.features.shape[0])
        )

    @property
    def device(self) -> Any:
        return self.voice.device

    @property
    def batcher(self) -> SharedBatcher[UnitFeatures, np.ndarray]:
        return self._batcher

    def _run(self, units: Sequence[UnitFeatures]) -> list[np.ndarray]:
        if self._faults is not None:
            self._faults.check("diarize", len(units))
        feats = [unit.features for unit in units]
        if not any(unit.pieces for unit in units):
            return [row[None] for row in self.voice.embed_equal_length(feats)]
        return self.voice.embed_with_pieces(feats, [unit.pieces for unit in units])

    def embed(self, units: Sequence[UnitFeatures]) -> list[np.ndarray]:
        """Per unit a (1 + its pieces, dim) array: its embedding, then its pieces'."""
        return self._batcher.map(list(units))


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


def unit_spans(runs: list[tuple[int, int]], start: int = 0, end: int = CHUNK_FRAMES) -> list[tuple[int, int]]:
    """The chunk frames each run stands for: [start, end) (the whole chunk by default), cut midway
    between neighbouring runs (frames of the track in a run too short to embed go with the nearest
    embedded one)."""
    cuts = [(b + a) // 2 for (_, b), (a, _) in itertools.pairwise(runs)]
    return list(zip([start, *cuts], [*cuts, end], strict=True))


def piece_runs(first: int, last: int, frames: int = PIECE_FRAMES) -> list[tuple[int, int]]:
    """[first, last) cut into equal runs of at most `frames` (itself when that short)."""
    count = max(1, -(-(last - first) // frames))
    edges = np.linspace(first, last, count + 1).round().astype(np.int64).tolist()
    return list(itertools.pairwise(edges))


def _embeddable(
    lo: int, local: np.ndarray, active: np.ndarray, alone: np.ndarray, runs: list[tuple[int, int]]
) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """(filterbank frames, run) of the `runs` of a local speaker's track long enough to embed: the
    frames of the run where the speaker talks (`active`), alone where that is `MIN_CLEAN_S` or more.
    `local`: the chunk frame of each of the chunk's filterbank frames, the first of which is `lo`."""
    found = []
    for a, b in runs:
        inside = (local >= a) & (local < b)
        mine, clean = active & inside, alone & inside
        index = _crop_to_grid(lo + np.flatnonzero(clean if clean.sum() >= MIN_CLEAN_S * 100 else mine))
        if index.shape[0] >= MIN_UNIT_FRAMES:
            found.append((index, (a, b)))
    return found


def unit_pieces(
    index_local: np.ndarray, run: tuple[int, int], span: tuple[int, int]
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """A unit's pieces, if it is long enough to have two or more: (each piece's positions in the unit's
    frames, the chunk frames each stands for). `index_local`: the chunk frame of each of the unit's
    frames; `run`: the frames its track's run covers, cut by `piece_runs`; `span`: the frames the unit
    stands for, shared among its pieces. A piece needs `MIN_UNIT_FRAMES` of the unit's frames."""
    found = []
    for a, b in piece_runs(*run):
        positions = np.flatnonzero((index_local >= a) & (index_local < b))
        if positions.shape[0] >= MIN_UNIT_FRAMES:
            found.append((positions, (a, b)))
    if len(found) < 2:
        return [], []
    return [positions for positions, _ in found], unit_spans([r for _, r in found], *span)


@dataclass
class _Embeddable:
    """What one call of `_chunk_units` found to embed: unit rows (chunk, local speaker, frames, first,
    last) with their features and pieces, and piece rows (unit row, frames, first, last), in order."""

    rows: list[tuple[int, int, int, int, int]]
    inputs: list[UnitFeatures]
    piece_rows: list[tuple[int, int, int, int]]


def _chunk_units(samples: np.ndarray, seg: ChunkSegmentation, chunks: list[int], device: Any) -> _Embeddable:
    """The units and pieces of `chunks`, neighbours whose audio one filterbank covers, with their
    mean-normalised features."""
    import torch

    offsets = seg.offsets[chunks]
    # On the file's 10 ms filterbank grid, from the first frame centred in the first chunk: a unit gets
    # the same frames whatever block it is embedded in.
    first = max(int(offsets.min()) * FRAME_SAMPLES - FRAME_LENGTH // 2, 0) // FRAME_SHIFT * FRAME_SHIFT
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
    out = _Embeddable([], [], [])

    def gather(index: np.ndarray) -> Any:
        with torch.inference_mode():
            unit = feats[torch.from_numpy(index).to(feats.device)]
            return unit - unit.mean(dim=0, keepdim=True)

    for row, chunk in enumerate(chunks):
        offset = int(seg.offsets[chunk])
        lo, hi = int(np.searchsorted(grid, offset)), int(np.searchsorted(grid, offset + CHUNK_FRAMES))
        local = grid[lo:hi] - offset  # chunk frame of each filterbank frame
        active = activity[row][local]  # (fbank frames of the chunk, 3)
        alone = active & (active.sum(axis=1, keepdims=True) == 1)
        for speaker in range(active.shape[1]):
            frames = (lo, local, active[:, speaker], alone[:, speaker])
            found = _embeddable(*frames, track_runs(activity[row][:, speaker]))
            if not found:  # no run long enough alone: the whole track, as one unit
                found = _embeddable(*frames, [(0, CHUNK_FRAMES)])
            if not found:
                continue
            for (index, run), (a, b) in zip(found, unit_spans([run for _, run in found]), strict=True):
                unit = len(out.rows)
                pieces, spans = unit_pieces(local[index - lo], run, (a, b))
                out.inputs.append(UnitFeatures(gather(index), tuple(pieces)))
                out.rows.append((chunk, speaker, index.shape[0], a, b))
                out.piece_rows += [(unit, p.shape[0], c, d) for p, (c, d) in zip(pieces, spans, strict=True)]
    return out


def embed_local_speakers(
    samples: np.ndarray,
    seg: ChunkSegmentation,
    chunks: Sequence[int],
    embedder: UnitEmbedder,
) -> LocalSpeakers:
    """Embed the local speakers of the given chunks (a block: its runs of neighbouring chunks each
    get one filterbank, and all its units and pieces go to the model together)."""
    dim = embedder.voice.dim
    chunks = sorted(int(c) for c in chunks)
    found = _Embeddable([], [], [])
    for run in neighbour_runs(seg.offsets[chunks]):
        part = _chunk_units(samples, seg, [chunks[i] for i in run], embedder.device)
        found.piece_rows += [(unit + len(found.rows), n, a, b) for unit, n, a, b in part.piece_rows]
        found.rows += part.rows
        found.inputs += part.inputs
    if not found.rows:
        return LocalSpeakers.empty(dim)
    embedded = embedder.embed(found.inputs)  # per unit: its embedding, then its pieces' in order
    units = np.asarray(found.rows, dtype=np.int64)
    pieces = np.asarray(found.piece_rows, dtype=np.int64).reshape(-1, 4)
    unit_embeddings = np.stack([e[0] for e in embedded])
    piece_embeddings = np.concatenate([e[1:] for e in embedded]).reshape(-1, dim)
    alone = unlike_their_unit(piece_embeddings, unit_embeddings[pieces[:, 0]])
    again = np.flatnonzero(alone)
    if again.size:
        positions = [p for unit in found.inputs for p in unit.pieces]  # in piece row order
        own = [piece_alone(found.inputs[pieces[k, 0]], positions[k]) for k in again.tolist()]
        piece_embeddings[again] = np.stack([e[0] for e in embedder.embed(own)])
    return LocalSpeakers(
        units[:, 0],
        units[:, 1],
        units[:, 2] / 100.0,
        unit_embeddings,
        units[:, 3],
        units[:, 4],
        Pieces(pieces[:, 0], pieces[:, 1] / 100.0, piece_embeddings, pieces[:, 2], pieces[:, 3], alone),
    )


def unlike_their_unit(pieces: np.ndarray, units: np.ndarray) -> np.ndarray:
    """(m,) whether each piece's embedding from its unit's pass (row by row with its unit's) is less
    like its unit's than `PIECE_ALONE_BELOW`, or says nothing (all zero)."""
    norms = np.linalg.norm(pieces, axis=1) * np.linalg.norm(units, axis=1)
    alike = np.einsum("ij,ij->i", pieces, units) / np.where(norms > 0, norms, 1.0)
    return (norms <= 0) | (alike < PIECE_ALONE_BELOW)


def piece_alone(unit: UnitFeatures, positions: np.ndarray) -> UnitFeatures:
    """A piece's own features to embed alone: its unit's frames at `positions` (the middle of them, cut
    to `LENGTH_GRID`), mean-normalised over the piece."""
    import torch

    with torch.inference_mode():
        index = torch.from_numpy(_crop_to_grid(positions)).to(unit.features.device)
        frames = unit.features[index]
        return UnitFeatures(frames - frames.mean(dim=0, keepdim=True))
