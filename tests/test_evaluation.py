"""The scoring helpers the benchmarks and tests rely on: DER and turns from stored segments."""

from __future__ import annotations

import pytest

from voxdock.evaluation import Turn, diarization_error_rate, turns_from_segments


def test_turns_join_one_speakers_segments_across_short_pauses_only() -> None:
    segments = [
        Turn(0.0, 2.0, "A"),
        Turn(2.5, 4.0, "A"),  # 0.5 s pause: same turn
        Turn(4.2, 5.0, "B"),
        Turn(7.0, 8.0, "B"),  # 2 s pause: a new turn
        Turn(8.3, 9.0, "A"),
    ]
    assert turns_from_segments(segments) == [
        Turn(0.0, 4.0, "A"),
        Turn(4.2, 5.0, "B"),
        Turn(7.0, 8.0, "B"),
        Turn(8.3, 9.0, "A"),
    ]


def test_der_counts_miss_false_alarm_and_confusion() -> None:
    reference = [Turn(0.0, 10.0, "r1"), Turn(10.0, 20.0, "r2")]
    perfect = [Turn(0.0, 10.0, "x"), Turn(10.0, 20.0, "y")]
    assert diarization_error_rate(reference, perfect, collar=0.0).der == pytest.approx(0.0, abs=1e-3)
    # r2's second half given to r1's speaker: 5 s confused out of 20 s.
    confused = [Turn(0.0, 10.0, "x"), Turn(10.0, 15.0, "y"), Turn(15.0, 20.0, "x")]
    result = diarization_error_rate(reference, confused, collar=0.0)
    assert result.confusion == pytest.approx(0.25, abs=0.01) and result.miss == pytest.approx(0.0, abs=0.01)
    # Pauses inside a reference turn left out of the hypothesis are missed speech, joined they are not.
    gappy = [Turn(0.0, 4.5, "x"), Turn(5.0, 10.0, "x"), Turn(10.0, 20.0, "y")]
    assert diarization_error_rate(reference, gappy, collar=0.0).miss == pytest.approx(0.025, abs=0.005)
    joined = turns_from_segments(gappy)
    assert diarization_error_rate(reference, joined, collar=0.0).miss == pytest.approx(0.0, abs=0.005)
