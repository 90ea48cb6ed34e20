"""The line that says how a file's speakers were found (engine/diarization_note.py), for each way the
engine can find them; the engine stores it (tests/test_engine.py) and `voxdock show` prints it
(tests/test_cli_transcripts.py)."""

from __future__ import annotations

from voxdock.engine.diarization import DiarizationResult, SpeakerTurn
from voxdock.engine.diarization_note import diarization_note
from voxdock.engine.speakers import SpeakerOptions

ESTIMATE = SpeakerOptions()  # nothing given: the count is estimated
TURNS = [SpeakerTurn(0.0, 2.0, "SPEAKER_00"), SpeakerTurn(2.0, 4.0, "SPEAKER_01")]


def note(result: DiarizationResult, options: SpeakerOptions = ESTIMATE, words: bool = True) -> str:
    return diarization_note(result, options, threshold=0.91, has_words=words)


def test_each_way_of_finding_speakers_reads_as_itself() -> None:
    assert note(DiarizationResult(turns=TURNS)) == "diarized"
    assert (
        note(DiarizationResult(turns=TURNS, by_channel=True)) == "diarized by channel (one party per channel)"
    )
    # Channels that held nobody are named: an unused input, or a microphone that failed.
    lavaliers = DiarizationResult(
        turns=TURNS, by_channel=True, channel_count=6, channels_without_party=(5, 6)
    )
    assert note(lavaliers) == "diarized by channel (one party per channel); no party on channels 5 and 6 of 6"
    one = DiarizationResult(turns=TURNS, by_channel=True, channel_count=4, channels_without_party=(3,))
    assert note(one, SpeakerOptions(num_speakers=3)).endswith("no party on channel 3 of 4, 3 speakers given")
    monologue = DiarizationResult(
        turns=TURNS[:1], fast_path=True, fast_path_reason="one voice", fast_path_similarity=0.9583
    )
    assert note(monologue) == "monologue fast path: one voice (similarity 0.958 >= 0.910)"
    brief = DiarizationResult(turns=TURNS[:1], fast_path=True, fast_path_reason="too short to compare")
    assert note(brief) == "monologue fast path: too short to compare"
    # Speech, but none long enough to embed: one speaker, not "diarized".
    short = DiarizationResult(turns=TURNS[:1], unembedded=True)
    assert note(short) == "one speaker: too little speech to tell voices apart"
    # Words without turns: the engine gives the VAD's speech to one speaker, and says so.
    assert note(DiarizationResult(turns=[])).startswith("no speech heard by the diarizer")
    assert note(DiarizationResult(turns=[]), words=False) == "no speech"


def test_what_the_operator_gave_is_said_with_it() -> None:
    result = DiarizationResult(turns=TURNS)
    assert note(result, SpeakerOptions(num_speakers=4)) == "diarized, 4 speakers given"
    assert note(result, SpeakerOptions(min_speakers=2)) == "diarized, at least 2 speakers given"
    assert note(result, SpeakerOptions(min_speakers=2, max_speakers=5)) == "diarized, 2-5 speakers given"
    assert note(result, SpeakerOptions(max_speakers=3)) == "diarized, 1-3 speakers given"
