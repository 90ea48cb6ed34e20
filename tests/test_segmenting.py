"""Sentence segments from words, and speaker assignment with splits at word boundaries."""

from __future__ import annotations

from voxdock.engine.diarization import SpeakerTurn
from voxdock.engine.segmenting import words_to_segments
from voxdock.engine.speaker_assignment import SINGLE_SPEAKER, assign_speakers
from voxdock.engine.work import Word


def words(*spec: tuple[float, float, str]) -> list[Word]:
    return [Word(a, b, t, 0.9) for a, b, t in spec]


def test_sentences_pauses_and_length_start_new_segments() -> None:
    ws = words(
        (0.0, 0.3, " Hello"),
        (0.3, 0.6, " there."),
        (0.7, 1.0, " How"),
        (1.0, 1.3, " are"),
        (1.3, 1.6, " you"),
        (3.0, 3.3, " Fine"),
        (3.3, 3.5, " thanks"),
    )
    segs = words_to_segments(ws)
    assert [s.text for s in segs] == ["Hello there.", "How are you", "Fine thanks"]
    assert (segs[1].start, segs[1].end) == (0.7, 1.6)
    long_run = words(*[(i * 0.5, i * 0.5 + 0.4, f" w{i}") for i in range(60)])  # 30 s without a stop
    assert all(s.duration <= 20.0 for s in words_to_segments(long_run))
    assert sum(len(s.words) for s in words_to_segments(long_run)) == 60


def test_each_segment_gets_the_speaker_who_talks_most() -> None:
    segs = words_to_segments(words((0.0, 0.5, " Yes"), (0.5, 1.0, " indeed"), (1.0, 2.0, " absolutely.")))
    turns = [SpeakerTurn(0.0, 0.3, "B"), SpeakerTurn(0.3, 2.0, "A")]
    (out,) = assign_speakers(segs, turns)
    assert out.speaker == "A"


def test_a_segment_spanning_a_speaker_change_is_split_at_the_word_boundary() -> None:
    ws = words(
        (0.0, 0.4, " Are"),
        (0.4, 0.8, " you"),
        (0.8, 1.2, " coming"),
        (1.5, 1.9, " yes"),
        (1.9, 2.3, " I"),
        (2.3, 2.7, " am"),
    )
    segs = words_to_segments(ws)
    assert len(segs) == 1  # no pause long enough, no sentence end: one ASR segment
    turns = [SpeakerTurn(0.0, 1.3, "A"), SpeakerTurn(1.4, 2.8, "B")]
    out = assign_speakers(segs, turns)
    assert [(s.text, s.speaker) for s in out] == [("Are you coming", "A"), ("yes I am", "B")]
    assert out[0].end <= out[1].start


def test_a_lone_word_of_diarization_jitter_does_not_split() -> None:
    ws = words((0.0, 0.5, " one"), (0.5, 0.9, " two"), (0.9, 1.4, " three"))
    turns = [SpeakerTurn(0.0, 0.5, "A"), SpeakerTurn(0.5, 0.9, "B"), SpeakerTurn(0.9, 1.5, "A")]
    out = assign_speakers(words_to_segments(ws), turns)
    assert [(s.text, s.speaker) for s in out] == [("one two three", "A")]


def test_no_turns_means_one_speaker() -> None:
    out = assign_speakers(words_to_segments(words((0.0, 0.5, " hi."))), None)
    assert out[0].speaker == SINGLE_SPEAKER


def test_one_speakers_turns_are_the_speech_joined_across_short_pauses() -> None:
    from voxdock.engine.diarization import single_speaker_turns

    turns = single_speaker_turns([(5.2, 7.0), (0.5, 2.0), (2.8, 4.0), (7.0, 7.0), (9.5, 11.0)])
    assert [(t.start, t.end) for t in turns] == [(0.5, 4.0), (5.2, 7.0), (9.5, 11.0)]
    assert {t.speaker for t in turns} == {SINGLE_SPEAKER}
    assert single_speaker_turns([]) == []
