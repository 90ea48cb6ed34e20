"""The one line that says how a file's speakers were found: logged when the file is done, stored on its
source (migration 0006) and shown by `voxdock show` and `voxdock turns`. An operator who finds a
two-person call stored as one speaker reads here that the monologue fast path took it, and at what
similarity, instead of guessing."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line reads FAST_PATH without loading the diarizer
    from voxdock.engine.diarization import DiarizationResult
    from voxdock.engine.speakers import SpeakerOptions

ONE_SPEAKER_GIVEN = "one speaker given"
NO_SPEECH = "no speech"
UNHEARD = "no speech heard by the diarizer: one speaker over the VAD's speech"
UNEMBEDDED = "one speaker: too little speech to tell voices apart"
FAST_PATH = "monologue fast path"
BY_CHANNEL = "diarized by channel (one party per channel)"
DIARIZED = "diarized"


def diarization_note(
    result: DiarizationResult, options: SpeakerOptions, *, threshold: float, has_words: bool
) -> str:
    """How the diarizer's `result` found the speakers of a file (the engine says ONE_SPEAKER_GIVEN
    itself where the operator gave one speaker and nothing was diarized)."""
    if result.fast_path:
        similarity = result.fast_path_similarity
        measured = f" (similarity {similarity:.3f} >= {threshold:.3f})" if similarity is not None else ""
        return f"{FAST_PATH}: {result.fast_path_reason or 'one voice'}{measured}"
    if not result.turns:
        return UNHEARD if has_words else NO_SPEECH
    if result.unembedded:
        return UNEMBEDDED
    note = BY_CHANNEL + _without_party(result) if result.by_channel else DIARIZED
    return note + _given(options)


def _without_party(result: DiarizationResult) -> str:
    """'; no party on channels 5 and 6 of 6' where some channels held nobody (an unused input, or a
    microphone that failed: its person is heard only on the others' microphones)."""
    quiet = [str(k) for k in result.channels_without_party]
    if not quiet:
        return ""
    which = quiet[0] if len(quiet) == 1 else f"{', '.join(quiet[:-1])} and {quiet[-1]}"
    return f"; no party on channel{'s' if len(quiet) > 1 else ''} {which} of {result.channel_count}"


def _given(options: SpeakerOptions) -> str:
    if options.num_speakers is not None:
        return f", {options.num_speakers} speakers given"
    if options.min_speakers is not None or options.max_speakers is not None:
        low = options.min_speakers or 1
        high = "" if options.max_speakers is None else str(options.max_speakers)
        return f", {low}-{high} speakers given" if high else f", at least {low} speakers given"
    return ""


def short_note(note: str | None) -> str:
    """A few words for a table cell (the console's file list): how the speakers were found where it
    was not plain diarization; "" otherwise or when unknown."""
    if not note:
        return ""
    if note.startswith(FAST_PATH):
        return "fast path"
    if note.startswith(BY_CHANNEL):
        return "by channel"
    return {ONE_SPEAKER_GIVEN: "given", UNHEARD: "VAD only", UNEMBEDDED: "too little speech"}.get(note, "")
