"""The diarizer: segmentation-3.0 over sliding chunks, CAM++ per local speaker, clustering, reconstruction.

The recipe of pyannote 3.1, with the weights that install here and calibrated on real meetings:

1. segmentation (segmentation.py): 10 s chunks every 5 s; per frame, who of up to three local
   speakers talks, overlap included. It is also the voice activity detection: the engine's Silero
   regions (tuned for ASR) miss quiet and overlapped speech, so they only add speech where the model
   hears nobody, less their padding (`reconstruction.vad_frames`: loud speech under noise).
2. fast path (fastpath.py): when allowed, a sample of chunks decides whether one voice speaks
   throughout (each sampled track's units averaged: one point per local speaker); then the rest is
   skipped.
3. embeddings (embedding.py): CAM++ over each local speaker's own frames, its track cut at pauses
   into units, long units also in pieces, a block of chunks at a time (memory stays flat however
   long the file).
4. clustering (clustering.py): a track's units joined again where their voices agree, then
   agglomerative (average linkage, cosine distance, calibrated threshold). A cluster whose units split
   in two the same way however they are sampled, into two people, or into near twins heard in the same
   chunks as two people in conversation are, holds two voices and is split (voice_splits.py). An
   operator's count, where that does not reach it, cuts the dendrogram instead, never into voices at
   least 0.8 alike nor into speakers the clustering would merge (`speakers_of_units`).
5. refinement (refinement.py): a piece of a unit that clearly sounds like another speaker is
   credited to that speaker (one track often holds two people answering each other quickly).
6. reconstruction (reconstruction.py): per frame, the clusters' averaged activity (each unit credits
   the part of its chunk it stands for) and the number of voices give who talks, two at once where
   the model hears overlap. Turns follow: the most active
   speaker of each frame makes the turns words are attributed by (a run of it under 0.2 s goes to the
   speaker next to it: two near-equal voices make the maximum flicker), the second one where two talk
   makes the overlap turns (`DiarizationResult.overlaps`).

A source's channel levels (engine/channels.py) may come too: where each channel holds a party
of its own, every unit and speaker is kept to its channel (sides.py), and the fast path is not tried.

Thread-safety: no per-call state; the models are shared through their batchers, so every worker's
chunks and speakers go to the device together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from voxdock.engine.diarization import fastpath
from voxdock.engine.diarization.clustering import (
    MAX_SPEAKERS,
    MERGE_SIMILARITY,
    THRESHOLD,
    Clusters,
    cluster_local_speakers,
    side_of,
)
from voxdock.engine.diarization.embedding import LocalSpeakers, UnitEmbedder, embed_local_speakers
from voxdock.engine.diarization.reconstruction import (
    OVERLAP_THRESHOLD,
    SPEECH_THRESHOLD,
    absorb_short_runs,
    fill_unclaimed,
    frames_to_turns,
    rank_speakers,
    speaker_activity,
    turns_of,
    vad_frames,
    voices_per_frame,
)
from voxdock.engine.diarization.refinement import credits
from voxdock.engine.diarization.segmentation import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    STEP_S,
    ChunkSegmentation,
    SegmentationModel,
    chunk_offsets,
    segment,
)
from voxdock.engine.diarization.sides import silence_other_side, speech_sides, unit_sides
from voxdock.engine.diarization.turns import (
    BRIDGE_GAP_S,
    SINGLE_SPEAKER,
    DiarizationResult,
    SpeakerTurn,
    speaker_name,
)
from voxdock.engine.diarization.voice_splits import split_two_voices
from voxdock.engine.speakers import SpeakerOptions

NAME = "segmentation-3.0+campplus"
BLOCK_CHUNKS = 48  # chunks embedded together (one filterbank): 4 minutes of audio at a 5 s step


@dataclass(frozen=True)
class DiarizerConfig:
    step_s: float = STEP_S
    threshold: float = THRESHOLD
    speech_threshold: float = SPEECH_THRESHOLD
    overlap_threshold: float = OVERLAP_THRESHOLD
    bridge_gap_s: float = BRIDGE_GAP_S
    max_speakers: int = MAX_SPEAKERS
    block_chunks: int = BLOCK_CHUNKS


@dataclass
class Evidence:
    """What the diarizer measures of a file before deciding (kept so that a benchmark can decide
    the same evidence under several speaker counts without measuring again)."""

    seg: ChunkSegmentation
    voices: np.ndarray  # (file frames,) 0, 1 or 2
    speakers: LocalSpeakers
    decision: fastpath.FastPathDecision | None
    # (file frames,) int8: k + 1 where channel k of a recording split by channel speaks
    # (engine/channels.py), 0 where none clearly does; None for any other recording.
    sides: np.ndarray | None = None
    # (file frames,) bool: where the engine's VAD heard speech (reconstruction.vad_frames), speech
    # too even where the segmentation model heard nobody; None when no VAD regions were given.
    heard: np.ndarray | None = None
    channel_count: int = 0  # the channels (or tracks) whose levels gave `sides`

    def speech(self) -> np.ndarray:
        return _speech(self.voices, self.heard)


def _speech(voices: np.ndarray, heard: np.ndarray | None) -> np.ndarray:
    """(file frames,) how many voices talk: the segmentation's, at least one where the VAD heard
    speech."""
    return voices if heard is None else np.maximum(voices, heard.astype(voices.dtype))


class SegmentationDiarizer:
    """The `Diarizer` protocol over the segmentation model and the shared CAM++ embedder."""

    def __init__(
        self, segmentation: SegmentationModel, embedder: UnitEmbedder, config: DiarizerConfig | None = None
    ) -> None:
        self.segmentation = segmentation
        self.embedder = embedder
        self.config = config or DiarizerConfig()

    @property
    def name(self) -> str:
        return NAME

    def diarize(
        self,
        samples: np.ndarray,
        speakers: SpeakerOptions | None = None,
        *,
        fast_path_threshold: float | None = None,
        check_stop: Callable[[], None] | None = None,
        channel_levels: np.ndarray | None = None,
        vad_speech: Sequence[tuple[float, float]] | None = None,
    ) -> DiarizationResult:
        """Who speaks when in 16 kHz mono `samples`. With `fast_path_threshold`, a file that may be a
        monologue (no count of 2+ given) is first checked for one voice on a sample of chunks.
        `check_stop` is called between blocks of chunks; what it raises abandons the file.
        `channel_levels`: a source's channel levels (engine/channels.py); where channels hold a party
        of their own each, no speaker is given speech of two. `vad_speech`: the engine's VAD
        regions (seconds), speech even where the segmentation model hears nobody."""
        speakers = speakers or SpeakerOptions()
        evidence = self.measure(
            samples,
            speakers,
            fast_path_threshold=fast_path_threshold,
            check_stop=check_stop,
            channel_levels=channel_levels,
            vad_speech=vad_speech,
        )
        return self.decide(evidence, speakers)

    def measure(
        self,
        samples: np.ndarray,
        speakers: SpeakerOptions | None = None,
        *,
        fast_path_threshold: float | None = None,
        check_stop: Callable[[], None] | None = None,
        channel_levels: np.ndarray | None = None,
        vad_speech: Sequence[tuple[float, float]] | None = None,
    ) -> Evidence:
        speakers = speakers or SpeakerOptions()
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        # One NaN would reach every embedding of its block and fail the clustering far from here (the
        # engine's decoder refuses such audio; this is for other callers). A sum needs no copy.
        if not math.isfinite(float(samples.sum(dtype=np.float64))):
            raise ValueError("diarize: the samples hold NaN or infinite values")
        config = self.config
        seg = segment(self.segmentation, samples, chunk_offsets(samples.shape[0], config.step_s), check_stop)
        voices = voices_per_frame(seg, config.speech_threshold, config.overlap_threshold)
        heard = None if vad_speech is None else vad_frames(vad_speech, voices.shape[0])
        dim = self.embedder.voice.dim
        if not voices.any() or speakers.known_single:  # nobody, or one speaker given: nothing to embed
            return Evidence(seg, voices, LocalSpeakers.empty(dim), None, heard=heard)
        sides = None if channel_levels is None else speech_sides(channel_levels, _speech(voices, heard))
        activity = seg.local_activity()
        done: list[LocalSpeakers] = []
        embedded: set[int] = set()
        decision = None
        # Speech from two channels or more of a split recording is several parties: no monologue to check for.
        if fast_path_threshold is not None and speakers.may_be_monologue and sides is None:
            alone = activity & (activity.sum(axis=-1, keepdims=True) == 1)
            alone_s = alone.sum(axis=1) * FRAME_SAMPLES / SAMPLE_RATE
            sample = fastpath.sample_chunks(alone_s)
            part = embed_local_speakers(samples, seg, sample.tolist(), self.embedder)
            done.append(part)
            embedded.update(sample.tolist())
            heard_at_once = len(seg.offsets) == 1  # the whole file is one chunk
            track_embeddings, track_seconds = part.per_track()
            decision = fastpath.one_voice(
                track_embeddings,
                track_seconds,
                fast_path_threshold,
                heard_at_once=bool(heard_at_once),
                second_voice=fastpath.second_voice_heard(alone_s),
                units=(part.embeddings, part.seconds),
            )
            if decision.monologue:
                return Evidence(seg, voices, part, decision, heard=heard)
        rest = [c for c in range(len(seg.offsets)) if c not in embedded and activity[c].any()]
        for i in range(0, len(rest), config.block_chunks):
            if check_stop is not None:
                check_stop()
            done.append(embed_local_speakers(samples, seg, rest[i : i + config.block_chunks], self.embedder))
        channel_count = 0 if sides is None or channel_levels is None else int(channel_levels.shape[0])
        return Evidence(seg, voices, LocalSpeakers.concat(done, dim), decision, sides, heard, channel_count)

    def decide(self, evidence: Evidence, speakers: SpeakerOptions | None = None) -> DiarizationResult:
        """The turns the evidence gives under these speaker options."""
        speakers = speakers or SpeakerOptions()
        seg, voices, units, decision = evidence.seg, evidence.speech(), evidence.speakers, evidence.decision
        config = self.config
        measured = decision is not None and not math.isnan(decision.similarity)
        similarity = decision.similarity if measured and decision is not None else None
        if not voices.any():
            return DiarizationResult(turns=[])  # nothing to diarize, nothing skipped
        monologue = decision is not None and decision.monologue and speakers.may_be_monologue
        if speakers.known_single or monologue or len(units) == 0:
            turns = _within(
                frames_to_turns((voices > 0)[:, None], [SINGLE_SPEAKER], config.bridge_gap_s), seg.num_samples
            )
            return DiarizationResult(
                turns=turns,
                fast_path=monologue,
                fast_path_reason=decision.reason if monologue and decision else "",
                fast_path_similarity=similarity,
                unembedded=bool(turns) and not (speakers.known_single or monologue),
            )
        sides = None if evidence.sides is None else unit_sides(seg, units, evidence.sides)
        bounds = speakers.bounds(config.max_speakers)
        clusters = speakers_of_units(
            units.embeddings,
            units.seconds,
            units.track,
            bounds=bounds,
            threshold=config.threshold,
            sides=sides,
            most=config.max_speakers,
            chunks=units.chunk,
        )
        speaker_sides = None
        if sides is not None:
            speaker_sides = side_of(sides, units.seconds, clusters.labels, clusters.count)
        credited = credits(units, clusters.labels, clusters.centroids, sides, speaker_sides)
        activity = speaker_activity(
            seg, credited.chunk, credited.local, credited.labels, clusters.count, credited.spans
        )
        fill_unclaimed(activity, voices, evidence.sides, speaker_sides)
        if evidence.sides is not None and speaker_sides is not None:
            silence_other_side(activity, evidence.sides, speaker_sides, voices)
        first, second = rank_speakers(activity, voices)
        absorb_short_runs(first, second, activity)
        # SPEAKER_00 talks most, then SPEAKER_01, ...
        talk = np.bincount(first[first >= 0], minlength=clusters.count)
        talk += np.bincount(second[second >= 0], minlength=clusters.count)
        names = [""] * clusters.count
        for rank, cluster in enumerate(np.argsort(-talk, kind="stable").tolist()):
            names[cluster] = speaker_name(rank)
        exclusive, overlaps = turns_of(first, second, names, config.bridge_gap_s)
        exclusive, overlaps = _within(exclusive, seg.num_samples), _within(overlaps, seg.num_samples)
        frame_s = FRAME_SAMPLES / SAMPLE_RATE
        starts = (seg.offsets[units.chunk] + units.first) * frame_s
        ends = (seg.offsets[units.chunk] + units.last) * frame_s
        spans = [(float(a), float(b)) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
        return DiarizationResult(
            turns=exclusive,
            overlaps=overlaps,
            windows=spans,
            window_embeddings=units.embeddings,
            window_speakers=[names[label] for label in clusters.labels.tolist()],
            fast_path_similarity=similarity,
            by_channel=sides is not None,
            channel_count=evidence.channel_count if sides is not None else 0,
            channels_without_party=_without_party(evidence) if sides is not None else (),
        )


def speakers_of_units(
    embeddings: np.ndarray,
    seconds: np.ndarray,
    tracks: np.ndarray,
    *,
    bounds: tuple[int, int],
    threshold: float = THRESHOLD,
    sides: np.ndarray | None = None,
    most: int = MAX_SPEAKERS,
    chunks: np.ndarray | None = None,
) -> Clusters:
    """The units' speakers within `bounds` (clustering.py); a cluster holding two voices is split
    (voice_splits.py), except in a recording split by channel, whose speakers keep to their sides.
    Given bounds, the units are first clustered as if none were (up to `most` speakers): where that
    count, voices split included, is within them, it is the answer (the forced cut and seeded
    speakers left no room under the bound for the split: espeak conversations told their count scored
    34.7 % DER, 17.1 % without it). Below the fewest, the count is sought by the forced cut, unless
    the file has several speakers untold and the cut makes one the clustering would merge with
    another (`_alike_pairs`): then the count is left unreached (the 7-minute real file told its 28
    speakers had one person cut into halves 0.78 alike, 26.6 % against 17.7 %; the AMI excerpts told
    their counts 17.9 -> 16.6 %). Heard as one voice, a file gets the count it is told: the real call
    over a telephone line told 2 is 10.3 %, and 49.3 % as one speaker; bench/diarization_eval.py."""

    def clustered(low: int, high: int) -> Clusters:
        found = cluster_local_speakers(
            embeddings, seconds, tracks, bounds=(low, high), threshold=threshold, sides=sides
        )
        return found if sides is not None else split_two_voices(embeddings, seconds, found, high, chunks)

    if bounds != (1, most) and sides is None:
        unbounded = clustered(1, most)
        if bounds[0] <= unbounded.count <= bounds[1]:
            return unbounded
        if unbounded.count < bounds[0]:
            forced = clustered(*bounds)
            # The count is not reached by cutting a voice the clustering calls one person, where it
            # tells people apart in this file at all: heard as one voice (a telephone call's two
            # parties are 0.7-0.8 alike to CAM++), the operator's count is the better evidence.
            cut_one_person = _alike_pairs(forced) > _alike_pairs(unbounded)
            return unbounded if unbounded.count > 1 and cut_one_person else forced
    return clustered(*bounds)


def _alike_pairs(clusters: Clusters) -> int:
    """How many pairs of speakers have centroids at least `MERGE_SIMILARITY` alike: one person to the
    clustering, unless the voice split kept two alike voices apart."""
    alike = clusters.centroids.astype(np.float64) @ clusters.centroids.T.astype(np.float64)
    return int(np.triu(alike >= MERGE_SIMILARITY, k=1).sum())


def _without_party(evidence: Evidence) -> tuple[int, ...]:
    """The channels (numbered from 1) of a recording split by channel that are no party's side."""
    assert evidence.sides is not None
    parties = set(np.unique(evidence.sides).tolist())
    return tuple(k for k in range(1, evidence.channel_count + 1) if k not in parties)


def _within(turns: list[SpeakerTurn], num_samples: int) -> list[SpeakerTurn]:
    """Turns cut at the end of the audio (the last frame's span reaches a little past it)."""
    end = num_samples / SAMPLE_RATE
    return [SpeakerTurn(t.start, min(t.end, end), t.speaker) for t in turns if t.start < end]
