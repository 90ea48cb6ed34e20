"""Whole-sentence spans: the speaker-count check the diarizer runs on them, and its check of an
operator's count's partition."""

from __future__ import annotations

import numpy as np

from voxdock.engine.clustering import ClusteringResult
from voxdock.engine.diarization_senko import partition_for_given_count
from voxdock.engine.spans import (
    CAM_SURE_RATIO,
    MIN_SPANS,
    NEW_SPEAKER_SPANS,
    ONE_VOICE_RATIO,
    SpanVoices,
    distinct_voices,
    labels_of_spans,
    most_distinct_partition,
    same_voice_pair,
    split_ratio,
)


def _voices(rng: np.random.Generator, groups: list[int], dim: int) -> np.ndarray:
    centres = rng.standard_normal((len(groups), dim))
    return np.concatenate(
        [c + 0.3 * rng.standard_normal((n, dim)) for c, n in zip(centres, groups, strict=True)]
    )


SPANS = [(2.0 * i, 2.0 * i + 1.8) for i in range(10)]
WINDOWS = [(0.6 * i, 0.6 * i + 1.5) for i in range(32)]


def test_spans_take_the_label_covering_most_of_them() -> None:
    labels = np.array([0] * 16 + [1] * 16)  # windows 0-15 start before 9.6 s
    spans = labels_of_spans(SPANS, WINDOWS, labels)
    assert spans.tolist()[:4] == [0, 0, 0, 0] and spans.tolist()[-4:] == [1, 1, 1, 1]
    assert labels_of_spans([(100.0, 102.0)], WINDOWS, labels).tolist() == [-1]  # no window there


def test_one_voice_cut_in_two_is_found_and_two_voices_are_not() -> None:
    rng = np.random.default_rng(3)
    labels = np.array([0] * 16 + [1] * 16)
    one_voice = _voices(rng, [10], 192), _voices(rng, [10], 256)
    assert same_voice_pair(SPANS, one_voice[0], one_voice[1], WINDOWS, labels)
    two_voices = _voices(rng, [5, 5], 192), _voices(rng, [5, 5], 256)
    assert not same_voice_pair(SPANS, two_voices[0], two_voices[1], WINDOWS, labels)
    # CAM++ alone has its own, stricter ratio; one voice still reads as one
    assert same_voice_pair(SPANS, one_voice[0], None, WINDOWS, labels)


def test_cam_sure_of_one_voice_outvotes_ge2e_only_among_three_or_more() -> None:
    rng = np.random.default_rng(6)
    three = np.array([0] * 11 + [1] * 11 + [2] * 10)
    by_span = labels_of_spans(SPANS, WINDOWS, three)
    assert set(by_span.tolist()) == {0, 1, 2}
    # CAM++ hears speakers 0 and 2 as one voice, GE2E hears three voices
    cam_centres = rng.standard_normal((2, 192))[[0, 1, 0]]
    cam = cam_centres[by_span] + 0.3 * rng.standard_normal((len(SPANS), 192))
    ge2e = _voices(rng, np.bincount(by_span).tolist(), 256)
    assert split_ratio(cam, by_span) >= CAM_SURE_RATIO
    assert split_ratio(cam, by_span, second=ge2e) < ONE_VOICE_RATIO
    assert same_voice_pair(SPANS, cam, ge2e, WINDOWS, three)
    # the same disagreement between two speakers keeps both (merging would make a monologue)
    two = np.array([0] * 16 + [1] * 16)
    one_cam, two_ge2e = _voices(rng, [10], 192), _voices(rng, [5, 5], 256)
    assert split_ratio(one_cam, labels_of_spans(SPANS, WINDOWS, two)) >= CAM_SURE_RATIO
    assert not same_voice_pair(SPANS, one_cam, two_ge2e, WINDOWS, two)


def test_no_evidence_keeps_the_speakers() -> None:
    rng = np.random.default_rng(4)
    labels = np.array([0] * 16 + [1] * 16)
    few = SPANS[: MIN_SPANS - 1]
    cam, ge2e = _voices(rng, [len(few)], 192), _voices(rng, [len(few)], 256)
    assert not same_voice_pair(few, cam, ge2e, WINDOWS, labels)
    # a third speaker with no span of its own: nothing to compare it on
    three = labels.copy()
    three[5] = 2
    cam, ge2e = _voices(rng, [10], 192), _voices(rng, [10], 256)
    assert not same_voice_pair(SPANS, cam, ge2e, WINDOWS, three)


def test_a_left_out_speaker_is_added_only_on_clear_evidence() -> None:
    rng = np.random.default_rng(5)
    labels = np.array([0] * 16 + [1] * 16)
    two_voices = _voices(rng, [5, 5], 192), _voices(rng, [5, 5], 256)
    assert distinct_voices(SPANS, two_voices[0], two_voices[1], WINDOWS, labels)
    one_voice = _voices(rng, [10], 192), _voices(rng, [10], 256)
    assert not distinct_voices(SPANS, one_voice[0], one_voice[1], WINDOWS, labels)
    # two voices, but the new speaker speaks in fewer than NEW_SPEAKER_SPANS sentences
    short = labels.copy()
    short[: 32 - 3 * (NEW_SPEAKER_SPANS - 1)] = 0  # speaker 1 keeps the last few windows only
    held = np.bincount(labels_of_spans(SPANS, WINDOWS, short), minlength=2)[1]
    assert 0 < held < NEW_SPEAKER_SPANS
    assert not distinct_voices(SPANS, two_voices[0], two_voices[1], WINDOWS, short)


# Ten spans in three voices: A A A B B B C C C C. `RIGHT` gives each voice a speaker; `A_CUT` is as
# tight a partition as a clustering might find when B and C are close: A cut in two, B and C merged.
SPAN_VOICES = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
RIGHT = np.array([SPAN_VOICES[min(int((a + 0.75) // 2), 9)] for a, _ in WINDOWS])
A_CUT = np.array([[0, 0, 1, 2, 2, 2, 2, 2, 2, 2][min(int((a + 0.75) // 2), 9)] for a, _ in WINDOWS])


def _three_voices(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return _voices(rng, [3, 3, 4], 192), _voices(rng, [3, 3, 4], 256)


def test_the_partition_whose_speakers_differ_most_on_sentences_is_picked() -> None:
    cam, ge2e = _three_voices(8)
    assert labels_of_spans(SPANS, WINDOWS, RIGHT).tolist() == SPAN_VOICES
    assert same_voice_pair(SPANS, cam, ge2e, WINDOWS, A_CUT)  # the cut voice reads as one
    assert not same_voice_pair(SPANS, cam, ge2e, WINDOWS, RIGHT)
    for order in ([A_CUT, RIGHT], [RIGHT, A_CUT]):
        picked = most_distinct_partition(SPANS, cam, ge2e, WINDOWS, order)
        assert picked is not None and np.array_equal(picked, RIGHT)
    assert np.array_equal(most_distinct_partition(SPANS, cam, None, WINDOWS, [A_CUT, RIGHT]), RIGHT)
    # a partition with a speaker that holds no span cannot be judged, so it is never picked
    no_span = RIGHT.copy()
    no_span[5] = 3
    assert most_distinct_partition(SPANS, cam, ge2e, WINDOWS, [no_span]) is None


def test_an_operators_count_never_keeps_a_voice_cut_in_two_when_a_better_split_is_near() -> None:
    said = SpanVoices(SPANS, *_three_voices(8))

    def given(labels: np.ndarray, options: list[np.ndarray], count: int = 3) -> np.ndarray:
        result = ClusteringResult(labels, count, alternatives={count: options})
        return partition_for_given_count(result, WINDOWS, said)

    assert np.array_equal(given(A_CUT, [A_CUT, RIGHT]), RIGHT)
    assert np.array_equal(given(RIGHT, [RIGHT, A_CUT]), RIGHT)  # a sound partition is kept
    assert np.array_equal(given(A_CUT, [A_CUT]), A_CUT)  # nothing near to take instead
    two = (A_CUT > 0).astype(np.int64)
    assert np.array_equal(given(two, [two, RIGHT.clip(0, 1)], count=2), two)  # two keep distinct_two
