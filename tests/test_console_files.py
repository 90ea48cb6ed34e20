"""The console's files view: who speaks in each stored file, by enrolled name where known."""

from __future__ import annotations

from dataclasses import replace

from console_states import files

from voxdock.tui.widgets import speakers_cell


def test_the_speakers_cell_names_the_enrolled_and_counts_the_rest() -> None:
    done = next(f for f in files() if f.state == "done")
    assert speakers_cell(done) == "Alice Moreau, Ben Okafor +1"
    assert speakers_cell(replace(done, speaker_count=2)) == "Alice Moreau, Ben Okafor"
    assert speakers_cell(replace(done, speaker_names=())) == "3"
    assert speakers_cell(replace(done, speaker_names=(), speaker_count=None)) == ""
    # A name matched on a file the diarizer counted fewer speakers in never shows a negative rest.
    assert speakers_cell(replace(done, speaker_count=1)) == "Alice Moreau, Ben Okafor"


def test_the_speakers_cell_says_when_they_were_not_found_by_plain_diarization() -> None:
    """The monologue fast path and recordings split by channel are marked, so an operator sees at a
    glance which one-speaker files were never diarized (`voxdock show` says why)."""
    done = replace(next(f for f in files() if f.state == "done"), speaker_names=())
    fast = "monologue fast path: one voice (similarity 0.958 >= 0.910)"
    assert speakers_cell(replace(done, speaker_count=1, diarization=fast)) == "1 (fast path)"
    split = "diarized by channel (one party per channel)"
    assert speakers_cell(replace(done, speaker_count=2, diarization=split)) == "2 (by channel)"
    assert speakers_cell(replace(done, speaker_count=1, diarization="one speaker given")) == "1 (given)"
    assert speakers_cell(replace(done, diarization="diarized, 3 speakers given")) == "3"
    assert speakers_cell(replace(done, speaker_count=None, diarization=fast)) == ""
