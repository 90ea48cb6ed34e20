"""A cluster holding two voices is split where its units split stably (engine/diarization/voice_splits.py):
near twins too alike for the clustering threshold, and two people joined into one cluster; one real
voice is not split.

The near twins are the evaluation generator's closest pair (tests/fixtures/media/alike_voices_2spk.flac,
made by tests/fixtures/make_fixtures.py); the real voice is the pocketsphinx-testdata reader (five
LibriVox recordings, tests/fixtures/media/real). Embeddings are CAM++'s, of windows of the reference
turns, so that each is one voice whatever the segmentation model would make of the file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import MEDIA, REAL, same_partition, two_voices

from voxdock.engine.decode import decode_file
from voxdock.engine.diarization.clustering import Clusters, cluster_local_speakers, normalise
from voxdock.engine.diarization.pipeline import SegmentationDiarizer, speakers_of_units
from voxdock.engine.diarization.voice_splits import (
    MIN_SIMILARITY,
    MIN_UNITS,
    adjusted_rand_index,
    heard_together,
    split_two_voices,
)
from voxdock.engine.fbank import fbank

RATE = 16000


def windows(
    samples: np.ndarray, spans: list[tuple[float, float, str]], length: float
) -> list[tuple[np.ndarray, str]]:
    """Consecutive windows of `length` seconds inside each (start, end, speaker) span, the last one
    kept when it has at least a second."""
    out = []
    for start, end, speaker in spans:
        at = start
        while end - at >= min(1.0, length):
            out.append((samples[int(at * RATE) : int(min(end, at + length) * RATE)], speaker))
            at += length
    return out


def embed(
    diarizer: SegmentationDiarizer, parts: list[tuple[np.ndarray, str]]
) -> tuple[np.ndarray, np.ndarray]:
    embeddings = diarizer.embedder.voice.embed_features([fbank(samples) for samples, _ in parts])
    return embeddings, np.array([samples.shape[0] / RATE for samples, _ in parts])


@pytest.mark.models
def test_two_alike_voices_heard_as_one_are_split_into_theirs(diarizer: SegmentationDiarizer) -> None:
    samples = decode_file(MEDIA / "alike_voices_2spk.flac").samples
    turns = json.loads((MEDIA / "alike_voices_2spk.json").read_text())["turns"]
    parts = windows(samples, [(t["start"], t["end"], t["speaker"]) for t in turns], 2.0)
    embeddings, seconds = embed(diarizer, parts)
    truth = np.array([speaker == turns[0]["speaker"] for _, speaker in parts], dtype=np.int64)
    clusters = cluster_local_speakers(embeddings, seconds)
    assert clusters.count == 1  # what the threshold makes of them
    split = split_two_voices(embeddings, seconds, clusters, high=50)
    assert split.count == 2
    assert adjusted_rand_index(truth, split.labels) > 0.8, split.labels
    assert split_two_voices(embeddings, seconds, clusters, high=1).count == 1  # a bound is kept


@pytest.mark.models
def test_one_real_voice_is_not_split(diarizer: SegmentationDiarizer) -> None:
    parts = []
    for path in sorted(REAL.glob("ps_librivox_*.wav")):
        samples = decode_file(path).samples
        parts += windows(samples, [(0.0, samples.shape[0] / RATE, "reader")], 1.0)
    embeddings, seconds = embed(diarizer, parts)
    assert (seconds >= 1.0).sum() >= MIN_UNITS  # enough units for the test to be made
    clusters = cluster_local_speakers(embeddings, seconds)
    assert clusters.count == 1
    assert split_two_voices(embeddings, seconds, clusters, high=50).count == 1


def one_cluster(embeddings: np.ndarray) -> Clusters:
    return Clusters(
        np.zeros(len(embeddings), dtype=np.int64), normalise(embeddings.mean(axis=0, keepdims=True))
    )


def test_a_stable_split_into_near_twins_is_two_speakers() -> None:
    embeddings, truth = two_voices(alike=0.92)
    split = split_two_voices(embeddings, np.full(len(truth), 2.0), one_cluster(embeddings), high=50)
    assert split.count == 2 and adjusted_rand_index(truth, split.labels) == 1.0


def test_near_twins_are_split_only_where_heard_together_as_in_conversation() -> None:
    """Two people near twins to CAM++ take turns in the same 10 s chunks; one person's voice that splits
    as stably, into halves heard at different times (two recordings, two microphones), is one speaker
    (the memory bench's 3-hour real recordings: 49 speakers for 28 before)."""
    embeddings, truth = two_voices(alike=0.92)
    seconds = np.full(len(truth), 2.0)
    conversation = np.arange(len(truth)) % (len(truth) // 2)  # each voice's n-th unit heard in chunk n
    apart = np.where(truth == 0, np.arange(len(truth)), 1000 + np.arange(len(truth)))
    clusters = one_cluster(embeddings)
    split = split_two_voices(embeddings, seconds, clusters, high=50, chunks=conversation)
    assert split.count == 2 and adjusted_rand_index(truth, split.labels) == 1.0
    assert split_two_voices(embeddings, seconds, clusters, high=50, chunks=apart).count == 1
    # Heard together in a third of the smaller half's chunks is enough (four-voice conversations).
    some = apart.copy()
    some[np.flatnonzero(truth == 1)[:7]] = apart[np.flatnonzero(truth == 0)[:7]]
    assert heard_together(some, truth) == pytest.approx(7 / 20)
    assert split_two_voices(embeddings, seconds, clusters, high=50, chunks=some).count == 2
    # Two people apart by the clustering's own measure are split however they are heard.
    people, _ = two_voices(alike=0.65)
    assert split_two_voices(people, seconds, one_cluster(people), high=50, chunks=apart).count == 2
    # The pipeline passes each unit's chunk: heard apart, told nothing, one speaker.
    tracks = np.arange(len(truth))
    assert speakers_of_units(embeddings, seconds, tracks, bounds=(1, 50), chunks=apart).count == 1
    assert speakers_of_units(embeddings, seconds, tracks, bounds=(1, 50), chunks=conversation).count == 2


def test_two_people_joined_into_one_cluster_are_split() -> None:
    # Halves less alike than clustering.MERGE_SIMILARITY: two people by the clustering's own measure
    # (espeak voices joined through tracks that held both, 2-means halves 0.70-0.73 alike).
    embeddings, truth = two_voices(alike=0.65)
    split = split_two_voices(embeddings, np.full(len(truth), 2.0), one_cluster(embeddings), high=50)
    assert split.count == 2 and adjusted_rand_index(truth, split.labels) == 1.0


def test_three_voices_two_of_them_near_twins_are_three_speakers() -> None:
    # The split into two people is tested again: one of its halves holds the near twins.
    rng = np.random.default_rng(4)
    axes = np.linalg.qr(rng.normal(size=(192, 3)))[0].T
    twin = 0.92 * axes[0] + np.sqrt(1 - 0.92**2) * axes[1]
    apart = 0.65 * normalise((axes[0] + twin)[None])[0] + np.sqrt(1 - 0.65**2) * axes[2]
    centres = np.repeat(np.stack([axes[0], twin, apart]), 20, axis=0)
    embeddings = centres + 0.05 * rng.normal(size=centres.shape) / np.sqrt(192)
    truth, seconds = np.repeat([0, 1, 2], 20), np.full(60, 2.0)
    split = split_two_voices(embeddings, seconds, one_cluster(embeddings), high=50)
    assert split.count == 3 and same_partition(truth, split.labels), split.labels
    assert split_two_voices(embeddings, seconds, one_cluster(embeddings), high=2).count == 2


def test_near_twins_told_their_count_are_split_not_seeded() -> None:
    # Told 2, the clustering's forced cut and seeding used to fill the count with one unit, leaving no
    # room under the bound for the split (espeak conversations told their count: 34.7 % DER).
    embeddings, truth = two_voices(alike=0.92)
    seconds, tracks = np.full(len(truth), 2.0), np.arange(len(truth))
    for bounds in ((2, 2), (2, 5)):
        told = speakers_of_units(embeddings, seconds, tracks, bounds=bounds)
        assert told.count == 2 and adjusted_rand_index(truth, told.labels) == 1.0, bounds


def test_halves_less_alike_than_near_twins_stay_one_speaker() -> None:
    # One person recorded in two places splits just as stably, into halves about 0.77 alike: that is
    # left to clustering.MERGE_SIMILARITY, which joins them on purpose.
    embeddings, truth = two_voices(alike=MIN_SIMILARITY - 0.08)
    seconds = np.full(len(truth), 2.0)
    assert split_two_voices(embeddings, seconds, one_cluster(embeddings), high=50).count == 1


def test_a_count_is_not_reached_by_cutting_one_person_in_two() -> None:
    # Told a count the voices do not hold, the forced cut split one person recorded in two places
    # (halves 0.77 alike, which the clustering joins) beside another person: the 7-minute real file told
    # its 28 speakers scored 26.6 % against 17.7 % untold. The count is left unreached instead.
    places, _ = two_voices(alike=0.77)
    other = np.random.default_rng(8).normal(size=(20, 192))  # another person, nothing like the first
    other = normalise(other.mean(axis=0, keepdims=True)) + 0.05 * other / np.sqrt(192)
    embeddings, truth = np.vstack([places, other]), np.repeat([0, 1], [len(places), len(other)])
    seconds, tracks = np.full(truth.size, 2.0), np.arange(truth.size)
    found = speakers_of_units(embeddings, seconds, tracks, bounds=(1, 50))
    assert found.count == 2 and same_partition(found.labels, truth)
    for bounds in ((3, 3), (3, 5)):
        told = speakers_of_units(embeddings, seconds, tracks, bounds=bounds)
        assert told.count == 2 and same_partition(told.labels, truth), bounds
    # Heard as one voice, the file gets the count it is told: over a telephone line two people can be
    # as alike as that to CAM++, and the operator knows better (the real call: 10.3 % told, 49.3 % not).
    seconds, tracks = np.full(len(places), 2.0), np.arange(len(places))
    assert speakers_of_units(places, seconds, tracks, bounds=(1, 50)).count == 1
    assert speakers_of_units(places, seconds, tracks, bounds=(2, 2)).count == 2
    # A voice heard once, too briefly to be found untold, is still the speaker a count asks for.
    embeddings, truth = two_voices(alike=0.3)
    keep = np.append(np.flatnonzero(truth == 0), np.flatnonzero(truth == 1)[0])
    embeddings, truth = embeddings[keep], truth[keep]
    seconds, tracks = np.where(truth == 1, 0.5, 2.0), np.arange(truth.size)
    assert speakers_of_units(embeddings, seconds, tracks, bounds=(1, 50)).count == 1
    told = speakers_of_units(embeddings, seconds, tracks, bounds=(2, 2))
    assert told.count == 2 and same_partition(told.labels, truth)


def test_too_few_or_too_short_units_are_not_tested() -> None:
    embeddings, truth = two_voices(alike=0.92, per_voice=MIN_UNITS // 2 - 1)
    assert split_two_voices(embeddings, np.full(len(truth), 2.0), one_cluster(embeddings), high=50).count == 1
    embeddings, truth = two_voices(alike=0.92)
    assert split_two_voices(embeddings, np.full(len(truth), 0.5), one_cluster(embeddings), high=50).count == 1


def test_the_rand_index_says_how_alike_two_splits_are() -> None:
    split = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert adjusted_rand_index(split, split) == 1.0
    assert adjusted_rand_index(split, 1 - split) == 1.0  # the names of the groups do not matter
    assert adjusted_rand_index(split, np.zeros_like(split)) == 0.0  # one group says nothing
    unrelated = np.array([0, 0, 1, 1, 0, 0, 1, 1])  # each group of one split half of each of the other
    assert adjusted_rand_index(split, unrelated) < 0.1
    one_moved = split.copy()
    one_moved[0] = 1
    assert 0.2 < adjusted_rand_index(split, one_moved) < 1.0
