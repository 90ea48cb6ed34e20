"""Times and durations as the command line and the console print them."""

from __future__ import annotations

import pytest

from voxdock.formatting import fmt_clock


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0:00.0"),
        (5.04, "0:05.0"),
        (59.96, "1:00.0"),
        (65.94, "1:05.9"),
        (3725.3, "1:02:05.3"),
        (-1.0, "0:00.0"),
    ],
)
def test_a_time_in_a_recording_shows_to_a_tenth_of_a_second(seconds: float, shown: str) -> None:
    assert fmt_clock(seconds) == shown
