"""What an operator may say about the speakers of a batch, and how a listing shows it."""

from __future__ import annotations

import pytest

from voxdock.engine.speakers import SpeakerOptions


@pytest.mark.parametrize(
    ("text", "options", "shown"),
    [
        ("", {}, "auto"),
        ("  ", {}, "auto"),
        ("2", {"num_speakers": 2}, "2"),
        (" 2 - 4 ", {"min_speakers": 2, "max_speakers": 4}, "2-4"),
        ("3-3", {"min_speakers": 3, "max_speakers": 3}, "3-3"),
    ],
)
def test_entries_become_batch_options(text: str, options: dict[str, int], shown: str) -> None:
    parsed = SpeakerOptions.parse(text)
    assert parsed.as_options() == options
    assert SpeakerOptions.from_options(options) == parsed
    assert parsed.describe() == shown


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("two", "'two' is not a count (2) or a range (2-4)"),
        ("2-", "is not a count (2) or a range (2-4)"),
        ("-2", "is not a count (2) or a range (2-4)"),
        ("2.5", "is not a count"),
        ("0", "at least one speaker"),
        ("4-2", "4 is more than 2"),
    ],
)
def test_bad_entries_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="speakers: ") as caught:
        SpeakerOptions.parse(text)
    assert reason in str(caught.value)


def test_one_sided_bounds_are_shown_as_such() -> None:
    assert SpeakerOptions(min_speakers=2).describe() == ">= 2"
    assert SpeakerOptions(max_speakers=3).describe() == "<= 3"
