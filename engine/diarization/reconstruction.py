"""From chunks and clusters back to who speaks when, overlapped speech included.

Every frame of the file lies in one or two chunks (four with a shorter step). For each chunk, each
local speaker's probability of talking is credited to the cluster that speaker was assigned to, and
averaged over the chunks that see the frame: how much each of the file's speakers talks there. How
many talk at once comes from the same chunks: the frame is speech where the averaged probability of
"not silence" passes `SPEECH_THRESHOLD`, and holds two voices where the probability of a pair passes
`OVERLAP_THRESHOLD`; that many of the most active speakers get the frame. Both thresholds sit below
one half on purpose: the model is cautious with quiet, distant and overlapped speech, and on the AMI
excerpts lowering them from 0.5 / 0.5 to the calibrated values took missed speech from 12.6 % to
9.9 % for 0.9 points of false alarm (with the speakers known: bench/diarization_eval.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxdock.engine.diarization.clustering import groups_by
from voxdock.engine.diarization.segmentation import (
    CHUNK_FRAMES,
    FRAME_DURATION_SAMPLES,
    FRAME_SAMPLES,
    PAIR_CLASSES,
    SAMPLE_RATE,
    SILENCE_CLASS,
    ChunkSegmentation,
)
from voxdock.engine.diarization.turns import BRIDGE_GAP_S, SpeakerTurn

SPEECH_THRESHOLD = 0.4
OVERLAP_THRESHOLD = 0.2
MIN_TURN_S = 0.0
RANK_BLOCK_FRAMES = 65_536  # about 18 minutes
# A run of the most active speaker shorter than this, next to another speaker's speech, is the
# frame-wise maximum flickering between two near-equal voices, not a turn (no word is that short):
# told a count above the voices heard, ami_trn05 came out with 32 of its 38 turns under 0.2 s, two
# speakers taking the frames in turn. Absorbed into the neighbour, no turn under 0.1 s is left on the
# bench's sets, and DER stayed or fell (the 7-minute real file 18.5 -> 18.1 %, mixed real voices
# 8.2 -> 8.0 %, AMI and the call unchanged; bench/diarization_eval.py).
MIN_RUN_S = 0.2
MIN_RUN_FRAMES = round(MIN_RUN_S * SAMPLE_RATE / FRAME_SAMPLES)


# The engine's Silero regions (tuned for ASR: 0.4 s of padding each side) count as speech too, less
# that padding: the segmentation model hears nobody in some loud speech, JFK's under his recording's
# crowd noise the most. Trimmed by 0.25 s each side and kept when 0.5 s or longer, they took the mixed
# real voices from 8.0 to 5.4 % DER (missed speech 3.6 -> 0.8 %; through MP3 10.4 -> 8.7 %, Opus
# 8.7 -> 6.9 %, AMR 8.2 -> 5.4 %, a telephone line 13.2 -> 10.8 %), the AMI excerpts stayed at 15.8 %
# (missed 8.5 -> 8.3 %), the call at 3.3 %, the 7-minute file at 18.9 %; the espeak conversations,
# with their clean silences, lost a point (36.0 -> 37.1 %, false alarm 1.8 -> 2.9 %). Untrimmed, the
# padding cost the AMI excerpts 2 points of false alarm (bench/diarization_eval.py).
VAD_TRIM_S = 0.25
VAD_MIN_S = 0.5


def vad_frames(regions: Sequence[tuple[float, float]], num_frames: int) -> np.ndarray:
    """(file frames,) bool: the frames inside the VAD's speech regions (seconds), each trimmed by
    `VAD_TRIM_S` at both ends and dropped when less than `VAD_MIN_S` is left."""
    heard = np.zeros(num_frames, dtype=bool)
    step = FRAME_SAMPLES / SAMPLE_RATE
    centre = FRAME_DURATION_SAMPLES / 2 / SAMPLE_RATE  # frame i's centre: i * step + centre
    for start, end in regions:
        start, end = start + VAD_TRIM_S, end - VAD_TRIM_S
        if end - start < VAD_MIN_S:
            continue
        first = max(0, int(np.ceil((start - centre) / step)))  # the frames whose centre lies inside
        last = min(num_frames, int(np.ceil((end - centre) / step)))
        heard[first:last] = True
    return heard


def _chunks_per_frame(seg: ChunkSegmentation) -> np.ndarray:
    """(file frames + 589, 1) how many chunks see each frame (the tail past the file is padding)."""
    seen = np.zeros((seg.num_frames + CHUNK_FRAMES, 1), np.float32)
    for offset in seg.offsets.tolist():
        seen[offset : offset + CHUNK_FRAMES] += 1.0
    return seen


def _average_over_chunks(seg: ChunkSegmentation, per_chunk: np.ndarray) -> np.ndarray:
    """(chunks, 589, d) -> (file frames, d): each frame's mean over the chunks that contain it."""
    total = np.zeros((seg.num_frames + CHUNK_FRAMES, per_chunk.shape[-1]), np.float32)
    for row, offset in enumerate(seg.offsets.tolist()):
        total[offset : offset + CHUNK_FRAMES] += per_chunk[row]
    return (total / np.maximum(_chunks_per_frame(seg), 1.0))[: seg.num_frames]


def voices_per_frame(
    seg: ChunkSegmentation,
    speech_threshold: float = SPEECH_THRESHOLD,
    overlap_threshold: float = OVERLAP_THRESHOLD,
) -> np.ndarray:
    """(file frames,) how many voices talk in each frame: 0, 1 or 2."""
    probs = seg.probs.astype(np.float32)
    speech = 1.0 - probs[..., SILENCE_CLASS]
    pair = probs[..., PAIR_CLASSES].sum(axis=-1)
    mean = _average_over_chunks(seg, np.stack([speech, pair], axis=-1))
    return (mean[:, 0] > speech_threshold).astype(np.int64) + (mean[:, 1] > overlap_threshold)


def speaker_activity(
    seg: ChunkSegmentation,
    chunk: np.ndarray,
    local: np.ndarray,
    labels: np.ndarray,
    count: int,
    spans: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(file frames, count) how much each cluster talks, from the units assigned to it (a unit is a
    local speaker of a chunk, over the chunk frames [first, last) of `spans`, the whole chunk
    without; a local speaker not in the table is left out), averaged over the chunks that see each
    frame."""
    first = spans[0] if spans is not None else np.zeros_like(chunk)
    last = spans[1] if spans is not None else np.full_like(chunk, CHUNK_FRAMES)
    total = np.zeros((seg.num_frames + CHUNK_FRAMES, max(count, 1)), np.float32)
    for group in groups_by(chunk):
        c = int(chunk[group[0]])
        probs = seg.local_probabilities([c])[0]  # (589, 3)
        mine = np.zeros((CHUNK_FRAMES, max(count, 1)), np.float32)
        for i in group.tolist():
            a, b, j, label = int(first[i]), int(last[i]), int(local[i]), int(labels[i])
            np.maximum(mine[a:b, label], probs[a:b, j], out=mine[a:b, label])
        offset = int(seg.offsets[c])
        total[offset : offset + CHUNK_FRAMES] += mine
    total /= np.maximum(_chunks_per_frame(seg), 1.0)  # in place: one frames x speakers array at a time
    return total[: seg.num_frames]


def fill_unclaimed(
    activity: np.ndarray,
    voices: np.ndarray,
    sides: np.ndarray | None = None,
    speaker_sides: np.ndarray | None = None,
) -> None:
    """In place: speech frames that no speaker's units cover (heard by the engine's VAD alone, or by
    chunks whose local speakers were too short to embed) take the activity of the nearest frame that
    some speaker's units cover, so that their speech goes to who talks around them rather than to
    whichever speaker is numbered 0. In a recording split by channel (`sides`, per frame, and
    `speaker_sides`, per speaker, as in sides.py) the nearest frame of a speaker of the frame's own
    side where it has one: speech heard on one channel goes to a party of that channel (on the 7-minute
    real file of bench/diarization_eval.py, 17.7 -> 17.5 % DER; no other real file moved)."""
    missing = (voices >= 1) & (activity.max(axis=1, initial=0.0) <= 0)
    if not missing.any() or activity.shape[1] == 0:
        return
    frame_sides = np.zeros(voices.shape[0], np.int64)
    if sides is not None and speaker_sides is not None:
        frame_sides = sides.astype(np.int64)
    for side in np.unique(frame_sides[missing]).tolist():
        allowed = np.ones(activity.shape[1], dtype=bool)
        if side > 0 and speaker_sides is not None and (speaker_sides == side).any():
            allowed = speaker_sides == side
        columns = np.flatnonzero(allowed)
        own = activity if allowed.all() else activity[:, columns]  # no copy of hours of frames
        covered = np.flatnonzero(own.max(axis=1) > 0)
        if covered.size == 0:
            continue
        frames = np.flatnonzero(missing & (frame_sides == side))
        nearest = _nearest(covered, frames)
        activity[np.ix_(frames, columns)] = activity[np.ix_(nearest, columns)]


def _nearest(marked: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The nearest of the sorted, non-empty frame indices `marked` to each of `frames`."""
    at = np.searchsorted(marked, frames)
    before = marked[np.clip(at - 1, 0, marked.size - 1)]
    after = marked[np.clip(at, 0, marked.size - 1)]
    return np.where(np.abs(after - frames) < np.abs(frames - before), after, before)


def rank_speakers(activity: np.ndarray, voices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, second): per frame, the most active speaker where anyone talks and the next most active
    where two do (-1 elsewhere). The first is who the frame's words are attributed to. Where the model
    hears two voices but only the first speaker's units cover the frame, the second is the speaker who
    talks most in the file besides the first. It had been whichever speaker is numbered 0: on the
    evidence of bench/diarization_eval.py, the AMI excerpts through MP3 17.4 -> 16.8 % DER, over a
    telephone line told their counts 27.0 -> 26.6 %, through Opus told 17.0 -> 17.4 % and the 7-minute
    file 19.1 -> 19.6 %, wideband unchanged (the speaker heard nearest in time instead: wideband AMI
    told their counts 16.6 -> 17.5 %)."""
    frames, k = activity.shape
    first = np.where(voices >= 1, activity.argmax(axis=1), -1)
    second = np.full(frames, -1, dtype=np.int64)
    if k < 2:
        return first, second
    by_talk = np.argsort(-activity.sum(axis=0), kind="stable")
    for a in range(0, frames, RANK_BLOCK_FRAMES):  # a copy of a block, not of hours of frames
        b = min(frames, a + RANK_BLOCK_FRAMES)
        others = activity[a:b].copy()
        rows = np.arange(b - a)
        others[rows, np.maximum(first[a:b], 0)] = -np.inf
        chosen = others.argmax(axis=1)
        unclaimed = others[rows, chosen] <= 0
        chosen[unclaimed] = np.where(first[a:b][unclaimed] == by_talk[0], by_talk[1], by_talk[0])
        second[a:b] = np.where(voices[a:b] >= 2, chosen, -1)
    return first, second


def absorb_short_runs(
    first: np.ndarray, second: np.ndarray, activity: np.ndarray, min_frames: int = MIN_RUN_FRAMES
) -> None:
    """In place: each run of a first speaker shorter than `min_frames` goes to the speaker talking
    next to it (the one more active over the run when both sides talk); where that speaker was the
    frames' second voice, the two swap. A run with silence on both sides stays (a short sound)."""
    for _ in range(3):  # a run absorbed can make its neighbours' runs long enough
        change = np.flatnonzero(np.diff(first)) + 1
        starts = np.concatenate([[0], change]).tolist()
        ends = np.concatenate([change, [first.shape[0]]]).tolist()
        moved = False
        for a, b in zip(starts, ends, strict=True):
            if b - a >= min_frames or first[a] < 0:
                continue
            sides = {int(first[a - 1]) if a > 0 else -1, int(first[b]) if b < first.shape[0] else -1} - {-1}
            if not sides:
                continue
            into = max(sorted(sides), key=lambda k: float(activity[a:b, k].sum()))
            if into == first[a]:
                continue
            was = first[a:b].copy()
            swap = second[a:b] == into
            second[a:b][swap] = was[swap]
            first[a:b] = into
            moved = True
        if not moved:
            return


def _gaps(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) frame ranges of the runs of False that have True on both sides."""
    steps = np.diff(mask.astype(np.int8))
    falls = np.flatnonzero(steps == -1) + 1  # first False after a True
    rises = np.flatnonzero(steps == 1) + 1  # first True after a False
    if falls.size == 0 or rises.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rises = rises[rises > falls[0]]
    falls = falls[: rises.size]
    return falls, rises


def bridge_labels(labels: np.ndarray, max_gap: int) -> np.ndarray:
    """Frames of silence (-1) shorter than `max_gap` between two runs of one speaker become that
    speaker's (a pause inside a turn, as references mark them)."""
    out = labels.copy()
    falls, rises = _gaps(labels >= 0)
    for a, b in zip(falls.tolist(), rises.tolist(), strict=True):
        if b - a < max_gap and labels[a - 1] == labels[b]:
            out[a:b] = labels[b]
    return out


def bridge_mask(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """`mask` with its runs of False shorter than `max_gap` between two Trues filled."""
    out = mask.copy()
    falls, rises = _gaps(mask)
    for a, b in zip(falls.tolist(), rises.tolist(), strict=True):
        if b - a < max_gap:
            out[a:b] = True
    return out


def _frame_time(frame: int) -> float:
    step = FRAME_SAMPLES / SAMPLE_RATE
    return max(0.0, frame * step + FRAME_DURATION_SAMPLES / 2 / SAMPLE_RATE - step / 2)


def label_turns(labels: np.ndarray, names: list[str]) -> list[SpeakerTurn]:
    """Turns from one speaker label per frame (-1: nobody): one per run of a label."""
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change]).tolist()
    ends = np.concatenate([change, [labels.shape[0]]]).tolist()
    return [
        SpeakerTurn(_frame_time(a), _frame_time(b), names[int(labels[a])])
        for a, b in zip(starts, ends, strict=True)
        if labels[a] >= 0
    ]


def turns_of(
    first: np.ndarray, second: np.ndarray, names: list[str], bridge_gap: float = BRIDGE_GAP_S
) -> tuple[list[SpeakerTurn], list[SpeakerTurn]]:
    """(turns, overlaps) from each frame's most active and second speakers. `turns`: one speaker at
    a time, a speaker's turn running through its pauses shorter than `bridge_gap` when nobody else
    talks there. `overlaps`: where a speaker talks (through its own short pauses, even if someone
    else talks in them, as references mark turns) while another one holds the turn."""
    gap = bridge_frames(bridge_gap)
    held = bridge_labels(first, gap)
    overlaps: list[SpeakerTurn] = []
    for k in range(len(names)):
        talks = bridge_mask((first == k) | (second == k), gap)
        extra = np.where(talks & (held >= 0) & (held != k), k, -1)
        overlaps.extend(label_turns(extra, names))
    return label_turns(held, names), sorted(overlaps, key=lambda t: (t.start, t.speaker))


def bridge_frames(bridge_gap: float) -> int:
    """Pauses of fewer frames than this are bridged, by both turn builders (turns_of and
    frames_to_turns), so that the fast path and the full path join a file's pauses alike."""
    return round(bridge_gap * SAMPLE_RATE / FRAME_SAMPLES)


def frames_to_turns(
    binary: np.ndarray, names: list[str], bridge_gap: float = BRIDGE_GAP_S, min_turn: float = MIN_TURN_S
) -> list[SpeakerTurn]:
    """Turns of each speaker from its active frames (a frame stands for its step around its centre);
    one speaker's turns less than `bridge_gap` apart join, turns shorter than `min_turn` go."""
    step = FRAME_SAMPLES / SAMPLE_RATE
    centre = FRAME_DURATION_SAMPLES / 2 / SAMPLE_RATE  # the middle of frame 0's receptive field
    gap = bridge_frames(bridge_gap)
    turns: list[SpeakerTurn] = []
    for k, name in enumerate(names):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], binary[:, k].astype(np.int8), [0]])))
        spans: list[list[float]] = []
        previous_last = 0
        for first, last in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            start = max(0.0, first * step + centre - step / 2)
            end = last * step + centre - step / 2
            if spans and first - previous_last < gap:
                spans[-1][1] = end
            else:
                spans.append([start, end])
            previous_last = last
        turns.extend(SpeakerTurn(float(a), float(b), name) for a, b in spans if b - a >= min_turn)
    return sorted(turns, key=lambda t: (t.start, t.speaker))
