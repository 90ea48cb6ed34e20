"""Units whose voice changes inside them: each of their pieces goes to the speaker it sounds like.

The segmentation model gives one track to two people who answer each other quickly, and a unit of
that track (embedding.py) then holds both: the clustering sees it as one voice, and reconstruction
credits all of its frames to one speaker. Units longer than `embedding.PIECE_S` are also embedded in
pieces; once the speakers are known, a piece that is clearly more like another speaker's centroid
than its unit's (by `PIECE_MARGIN` of cosine similarity, with `PIECE_MIN_SPEECH_S` of speech) is
credited to that speaker instead, if that speaker is heard nearby (`PIECE_NEIGHBOUR_CHUNKS`). No
cluster is made or dropped here, but one that won no frame with its units credited whole may win a
piece's: ami_trn05 told its four speakers gets a turn for the fourth (seeded from one voice; three
before). Under the first rule (margin 0.1, any speaker) one split recording with a channel per person
gained a fourth speaker it does not have (bench/split_channel_eval.py, mix5s_cards+lj+harvard: 9.4 %,
4 found); kept to speakers heard nearby it has its three (4.8 %).

Measured on the real sets (same evidence, bench/diarization_eval.py; without pieces -> margin 0.1
anywhere -> margin 0.25 nearby): the mixed real voices 5.1 -> 2.9 -> 3.1 % DER (the reader answered
by the card reader, whose 1-3 s cards the model kept on the reader's track: 16.6-23.3 % -> 4.2-8.8 %
-> 4.2-11.5 %), the 7-minute file 18.9 -> 17.5 -> 17.7 %, the AMI excerpts 15.0 -> 14.9 -> 14.9 %,
the call 3.3 % throughout. The diarizer memory bench's recordings (28 people, shuffled, at random
gains: bench/diarization_memory.py, 10 and 30 minutes) showed what the first rule cost: 18.7 / 17.6 %
without pieces, 22.0 / 19.0 % at margin 0.1 anywhere (confusion 8.3 -> 10.4 % pooled: with 28
centroids a noisy piece often lands clearly nearer someone heard minutes away), 18.6 / 17.3 % now.
Nearby alone (margin 0.1) gave 20.6 / 18.9 %; margin 0.25 alone 20.0 / 17.3 %; neighbourhoods of 0
and 1 chunk lost the mixed voices' gain (5.0 and 3.5 %). espeak fixed 21.7 -> 20.9 -> 21.0 %,
generated 37.1 -> 37.0 -> 37.1 %. Over a telephone line hardly a piece moved at margin 0.1 already:
voices there are too alike to CAM++ for a piece to be clearly nearer another speaker.

Those figures are with every piece embedded alone. Since most pieces' embeddings come from their
unit's own CAM++ pass, only those unlike their unit embedded alone (embedding.py), the real sets give
the AMI excerpts 15.0 %, the call 3.3 %, the mixed real voices 3.2 % and the 7-minute file 17.4 %
(18.9 % without pieces), at 1.08-1.14x the diarizer's time without pieces instead of 1.40x
(`python bench/diarization_pieces.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxdock.engine.diarization.clustering import normalise, opposite
from voxdock.engine.diarization.embedding import LocalSpeakers

PIECE_MARGIN = 0.25
PIECE_MIN_SPEECH_S = 1.0
# A piece goes only to a speaker with a unit within this many chunks of its own (about 10 s each way
# at a 5 s step): a quick answer comes from someone taking part there. With many speakers, a noisy
# piece otherwise found a clearly nearer centroid of someone heard far away.
PIECE_NEIGHBOUR_CHUNKS = 2


@dataclass(frozen=True)
class Credits:
    """What reconstruction credits: per row, a local speaker of a chunk over the chunk frames
    [first, last), and the speaker (cluster) its frames go to."""

    chunk: np.ndarray
    local: np.ndarray
    first: np.ndarray
    last: np.ndarray
    labels: np.ndarray

    @property
    def spans(self) -> tuple[np.ndarray, np.ndarray]:
        return self.first, self.last


def piece_labels(
    units: LocalSpeakers,
    labels: np.ndarray,
    centroids: np.ndarray,
    unit_sides: np.ndarray | None = None,
    speaker_sides: np.ndarray | None = None,
) -> np.ndarray:
    """(pieces,) the speaker of each of the units' pieces: its unit's (`labels`), or the speaker whose
    centroid it is clearly more like. With sides (a recording split by channel), never a speaker of
    the other side from its unit."""
    pieces = units.pieces
    own = labels[pieces.unit]
    if len(pieces) == 0 or centroids.shape[0] < 2:
        return own
    alike = normalise(np.asarray(pieces.embeddings, dtype=np.float64)) @ centroids.T.astype(np.float64)
    if unit_sides is not None and speaker_sides is not None:
        alike[opposite(unit_sides[pieces.unit][:, None], speaker_sides[None, :])] = -np.inf
    alike[~_heard_nearby(units.chunk, labels, centroids.shape[0])[units.chunk[pieces.unit]]] = -np.inf
    best = alike.argmax(axis=1)
    rows = np.arange(len(pieces))
    clearly = alike[rows, best] - alike[rows, own] > PIECE_MARGIN
    return np.where(clearly & (pieces.seconds >= PIECE_MIN_SPEECH_S), best, own)


def _heard_nearby(chunks: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """(chunks, count) whether each speaker has a unit within `PIECE_NEIGHBOUR_CHUNKS` of each chunk."""
    reach = PIECE_NEIGHBOUR_CHUNKS
    heard = np.zeros((int(chunks.max(initial=0)) + 1 + 2 * reach, count), dtype=bool)
    for shift in range(2 * reach + 1):
        heard[chunks + shift, labels] = True
    return heard[reach:]


def credits(
    units: LocalSpeakers,
    labels: np.ndarray,
    centroids: np.ndarray,
    unit_sides: np.ndarray | None = None,
    speaker_sides: np.ndarray | None = None,
) -> Credits:
    """The units with their speakers (`labels`), each unit that has pieces replaced by them, labelled
    by `piece_labels`. The pieces of a unit cover exactly its frames, so where no piece moves the
    credits are the units'."""
    pieces = units.pieces
    whole = np.ones(len(units), dtype=bool)
    whole[pieces.unit] = False
    moved = piece_labels(units, labels, centroids, unit_sides, speaker_sides)
    return Credits(
        chunk=np.concatenate([units.chunk[whole], units.chunk[pieces.unit]]),
        local=np.concatenate([units.local[whole], units.local[pieces.unit]]),
        first=np.concatenate([units.first[whole], pieces.first]),
        last=np.concatenate([units.last[whole], pieces.last]),
        labels=np.concatenate([labels[whole], moved]),
    )
