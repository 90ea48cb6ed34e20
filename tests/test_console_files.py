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
