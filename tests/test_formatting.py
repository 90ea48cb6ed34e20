"""Times, durations, real-time factors and ETAs as the command line and the console print them."""

from __future__ import annotations

import pytest

from voxdock.formatting import estimate_eta, fmt_clock, fmt_rtf


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


@pytest.mark.parametrize(
    ("rtf", "shown"),
    [
        (0.0000123, "1.23e-05"),  # a store stage on a 3-hour file
        (0.0000999, "9.99e-05"),
        (0.0001, "0.000100"),
        (0.00012, "0.000120"),
        (0.000999, "0.000999"),
        (0.0012, "0.00120"),
        (0.004, "0.00400"),  # decode: printed 0.004 before, and 0.0004 as 0.000
        (0.0912, "0.0912"),
        (0.09996, "0.100"),  # rounds up into the next decade: still three figures
        (0.1, "0.100"),
        (0.228, "0.228"),
        (0.9996, "1.00"),
        (1.0, "1.00"),
        (1.5, "1.50"),
        (12.34, "12.3"),
        (25.0, "25.0"),
        (99.94, "99.9"),
        (99.96, "100"),
        (123.4, "123"),
        (4567.8, "4568"),
    ],
)
def test_rtf_shows_three_significant_figures_at_every_magnitude(rtf: float, shown: str) -> None:
    assert fmt_rtf(rtf) == shown


@pytest.mark.parametrize(
    ("rtf", "shown"),
    [(None, "-"), (float("nan"), "-"), (0.0, "0"), (float("inf"), "inf"), (-0.25, "-0.250")],
)
def test_rtf_that_is_unknown_zero_or_infinite_says_so(rtf: float | None, shown: str) -> None:
    assert fmt_rtf(rtf) == shown


def test_no_rtf_between_a_ten_thousandth_and_a_thousand_prints_as_zero_or_loses_its_figures() -> None:
    for exponent in range(-40, 30):
        rtf = 10 ** (exponent / 10) * 1.2345
        shown = fmt_rtf(rtf)
        assert float(shown) > 0
        assert abs(float(shown) - rtf) / rtf < 0.005, (rtf, shown)  # 3 figures: within half a percent
        assert len(shown) <= 8, shown


@pytest.mark.parametrize(
    ("left", "done", "audio_done", "pace", "eta"),
    [
        (10, 5, 3000.0, 2.0, 3000.0),  # 10 x 600 s of audio at 2 audio-s per s
        (1, 1, 3600.0, 12.0, 300.0),
        (3, 120, 5400.0, 0.5, 270.0),
    ],
)
def test_eta_is_the_audio_left_over_the_pace(
    left: int, done: int, audio_done: float, pace: float, eta: float
) -> None:
    assert estimate_eta(left, done, audio_done, pace) == pytest.approx(eta)


@pytest.mark.parametrize(
    ("left", "done", "audio_done", "pace"),
    [
        (0, 5, 3000.0, 2.0),  # nothing left
        (10, 0, 0.0, 2.0),  # nothing finished to measure a file by
        (10, 3, 0.0, 2.0),  # only empty files finished
        (10, 5, 3000.0, None),  # no pace yet
        (10, 5, 3000.0, 0.0),
        (10, 5, 3000.0, float("nan")),
        (10, 5, 3000.0, float("inf")),
        (10, 5, 3000.0, -1.0),
    ],
)
def test_eta_without_grounds_is_unknown(left: int, done: int, audio_done: float, pace: float | None) -> None:
    assert estimate_eta(left, done, audio_done, pace) is None
