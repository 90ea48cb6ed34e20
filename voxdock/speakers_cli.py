"""`voxdock speakers ...`: enroll voices, list, rename, merge and forget them, match the store again.

The work is storage/speakers.py's (and engine/enrollment.py's for a clip); this module turns the
command line into those calls and their outcomes or refusals into one line each.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from voxdock import exit_codes
from voxdock.transcripts_cli import one_stored_source

if TYPE_CHECKING:
    from voxdock.engine.enrollment import ClipPrint
    from voxdock.settings import Settings
    from voxdock.storage.database import Database
    from voxdock.storage.speakers import Speaker

T = TypeVar("T")
SHORT_PRINT_S = 5.0

speakers_app = typer.Typer(
    help="Voices known across files: enroll a speaker once, find them in every file.",
    no_args_is_help=True,
)


def _hours(seconds: float) -> str:
    """Speech time as people say it: 45 s, 12 min, 2.1 h."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _said(speaker: Speaker, verb: str) -> None:
    from voxdock.cli import out

    where = (
        f"named in {speaker.files} file(s), {_hours(speaker.heard_s)} of speech"
        if speaker.files
        else ("not heard in any stored file yet")
    )
    out.print(
        f"{verb} {speaker.name}: print from {_hours(speaker.speech_s)} of speech; {where}",
        highlight=False,
        markup=False,
    )


@speakers_app.command("enroll")
def enroll(
    name: Annotated[str, typer.Argument(help="The speaker's name.")],
    from_file: Annotated[
        str | None, typer.Option("--from", help="A processed file (or part of its stored path).")
    ] = None,
    speaker: Annotated[
        str | None, typer.Option("--speaker", help="With --from: the file's speaker label (SPEAKER_00).")
    ] = None,
    start: Annotated[
        float | None, typer.Option("--start", min=0, help="With --from: from this second.")
    ] = None,
    end: Annotated[float | None, typer.Option("--end", min=0, help="With --from: to this second.")] = None,
    audio: Annotated[
        Path | None, typer.Option("--audio", help="An audio clip of this speaker alone.")
    ] = None,
    voice: Annotated[
        int | None, typer.Option("--voice", help="An unknown voice from `voxdock speakers list --unknown`.")
    ] = None,
) -> None:
    """Store a voice print for NAME and name them in every stored file (and every file stored later)."""
    from voxdock.cli import fail, open_store, settings_or_exit, setup_logging
    from voxdock.storage.speakers import (
        SpeakerError,
        check_name,
        enroll_from_source,
        enroll_print,
        enroll_voice,
    )

    chosen = [
        flag
        for flag, given in (("--from", from_file), ("--audio", audio), ("--voice", voice))
        if given is not None
    ]
    if len(chosen) != 1:
        raise fail(
            "give one of --from FILE, --audio CLIP or --voice N"
            + (f", not {' and '.join(chosen)}" if chosen else "")
        )
    if from_file is None and (speaker is not None or start is not None or end is not None):
        raise fail("--speaker, --start and --end go with --from FILE")
    if (start is None) != (end is None):
        raise fail("give both --start and --end")
    try:
        check_name(name)
    except SpeakerError as exc:
        raise fail(str(exc)) from None
    if audio is not None:
        from voxdock.cli import check_paths

        check_paths([audio])
    settings = settings_or_exit()
    setup_logging("WARNING")
    with open_store(settings) as db:
        try:
            if from_file is not None:
                source = one_stored_source(db, from_file)
                enrolled = enroll_from_source(
                    db, name, source.id, label=speaker, start_s=start, end_s=end, described_as=source.path
                )
            elif voice is not None:
                enrolled = enroll_voice(db, name, voice)
            else:
                assert audio is not None
                clip = _clip_print(settings, audio)
                enrolled = enroll_print(
                    db, name, clip.vector, clip.speech_s, str(audio.expanduser().absolute())
                )
        except SpeakerError as exc:
            raise fail(str(exc)) from None
    _said(enrolled, "enrolled")
    if enrolled.speech_s < SHORT_PRINT_S:
        from voxdock.cli import err

        err.print(
            f"note: a print from under {SHORT_PRINT_S:.0f} s of speech matches less reliably; enroll more of"
            f" this voice under another name and `voxdock speakers merge` it into {enrolled.name}",
            highlight=False,
            markup=False,
        )


def _clip_print(settings: Settings, audio: Path) -> ClipPrint:
    """The clip's print through the voice model the engine uses (loaded here, only for this)."""
    from voxdock.cli import fail, model_plan
    from voxdock.engine.decode import DecodeError
    from voxdock.engine.enrollment import NoSpeech, clip_print
    from voxdock.engine.loader import resolve_device
    from voxdock.engine.voice import VoiceEncoder

    plan = model_plan(settings)
    if not plan.voice.found:
        raise fail(f"voice model {plan.voice.name!r} not found: {plan.voice.note}")
    encoder = VoiceEncoder(plan.voice.require(), device=resolve_device(settings.compute_device))
    try:
        return clip_print(audio.expanduser(), encoder)
    except DecodeError as exc:
        raise fail(f"{audio}: {exc}") from None
    except NoSpeech as exc:
        raise fail(str(exc)) from None


@speakers_app.command("list")
def list_cmd(
    unknown: Annotated[
        bool, typer.Option("--unknown", help="Voices heard across files that no one has named yet.")
    ] = False,
    min_files: Annotated[
        int,
        typer.Option("--min-files", min=1, help="With --unknown: voices heard in at least this many files."),
    ] = 2,
) -> None:
    """Enrolled speakers with where they are heard; with --unknown, the unnamed voices that recur."""
    from rich.markup import escape
    from rich.table import Table

    from voxdock.cli import open_store, out, settings_or_exit, setup_logging
    from voxdock.storage.speakers import list_speakers, list_voices

    settings = settings_or_exit()
    setup_logging("WARNING")
    with open_store(settings) as db:
        if unknown:
            voices = list_voices(db, unknown_only=True, min_files=1)
        else:
            enrolled = list_speakers(db)
    if unknown:
        shown = [v for v in voices if v.files >= min_files]
        for v in shown:
            out.print(
                f"voice #{v.id}: in {v.files} file(s), {_hours(v.speech_s)} (e.g. {v.example})",
                highlight=False,
                markup=False,
            )
        rest = len(voices) - len(shown)
        if not shown:
            out.print(f"no unnamed voice is heard in {min_files} files or more", highlight=False)
        if rest:
            out.print(f"{rest} more heard in fewer files (--min-files 1 lists them)", highlight=False)
        if shown:
            out.print("name one: voxdock speakers enroll NAME --voice N", highlight=False, markup=False)
        return
    if not enrolled:
        out.print(
            "no speaker enrolled yet: voxdock speakers enroll NAME --from FILE --speaker LABEL", markup=False
        )
        return
    table = Table()
    for column in ("name", "print", "files", "heard", "enrolled from"):
        table.add_column(column, justify="right" if column in ("print", "files", "heard") else "left")
    for s in enrolled:
        table.add_row(
            escape(s.name), _hours(s.speech_s), str(s.files), _hours(s.heard_s), escape(s.enrolled_from or "")
        )
    out.print(table)


@speakers_app.command("rename")
def rename(
    name: Annotated[str, typer.Argument(help="An enrolled speaker.")],
    new_name: Annotated[str, typer.Argument(help="Their new name.")],
) -> None:
    """Give an enrolled speaker another name (every file shows the new one)."""
    from voxdock.storage.speakers import rename_speaker

    renamed = _run(lambda db: rename_speaker(db, name, new_name))
    _said(renamed, f"{name} is now")


@speakers_app.command("merge")
def merge(
    name: Annotated[str, typer.Argument(help="The speaker that goes.")],
    into: Annotated[str, typer.Argument(help="The speaker that stays (keeps its name).")],
) -> None:
    """Two enrolled speakers are one person: NAME's print joins INTO's and every file is matched again."""
    from voxdock.storage.speakers import merge_speakers

    merged = _run(lambda db: merge_speakers(db, name, into))
    _said(merged, f"merged {name} into")


@speakers_app.command("forget")
def forget(name: Annotated[str, typer.Argument(help="An enrolled speaker.")]) -> None:
    """Remove an enrolled speaker's print; the files that had the name become anonymous there."""
    from voxdock.cli import out
    from voxdock.storage.speakers import forget_speaker

    files = _run(lambda db: forget_speaker(db, name))
    out.print(f"forgot {name}: {files} file(s) had the name", highlight=False, markup=False)


@speakers_app.command("match")
def match(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Processed files or folders (default: every stored file).")
    ] = None,
) -> None:
    """Match stored files' speakers to enrolled ones again and regroup voices (no model runs).

    From what is stored: after an upgrade, or to relabel files now."""
    from voxdock.cli import fail, open_store, out, settings_or_exit, setup_logging
    from voxdock.storage.speakers import list_speakers, list_voices, match_store
    from voxdock.transcripts_cli import not_stored, stored_sources

    settings = settings_or_exit()
    setup_logging("WARNING")
    with open_store(settings) as db:
        ids: list[int] | None = None
        if paths:
            found: dict[int, None] = {}
            for path in paths:
                sources = stored_sources(db, path)
                if not sources:
                    raise fail(not_stored(path), code=exit_codes.INCOMPLETE)
                found.update((s.id, None) for s in sources)
            ids = list(found)
        count = match_store(db, ids)
        named = sum(s.files for s in list_speakers(db))
        voices = len(list_voices(db))
    out.print(
        f"matched {count} file(s): enrolled speakers found {named} time(s) (once per file each is in);"
        f" {voices} voice(s) across the archive",
        highlight=False,
        markup=False,
    )


@speakers_app.command("file")
def file_cmd(
    path: Annotated[str, typer.Argument(help="A processed file (or part of its stored path).")],
) -> None:
    """A file's speakers: their speech, the name each was matched to (and how closely), their voice."""
    from rich.table import Table

    from voxdock.cli import open_store, out, settings_or_exit, setup_logging
    from voxdock.storage.speakers import file_speakers

    settings = settings_or_exit()
    setup_logging("WARNING")
    with open_store(settings) as db:
        source = one_stored_source(db, path)
        rows = file_speakers(db, source.id)
    if not rows:
        out.print(f"{source.path}: no speakers stored", highlight=False, markup=False)
        raise typer.Exit(exit_codes.INCOMPLETE)
    table = Table(title=source.path, title_justify="left")
    for column in ("speaker", "speech", "segments", "name", "similarity", "voice"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.label,
            _hours(r.speech_s),
            str(r.segment_count),
            r.name or "",
            f"{r.similarity:.2f}" if r.similarity is not None else "",
            f"#{r.voice_id}" if r.voice_id is not None else "",
        )
    out.print(table)


def _run(action: Callable[[Database], T]) -> T:
    """Open the store, run `action(db)`, and turn a refusal into one line."""
    from voxdock.cli import fail, open_store, settings_or_exit, setup_logging
    from voxdock.storage.speakers import SpeakerError

    settings = settings_or_exit()
    setup_logging("WARNING")
    with open_store(settings) as db:
        try:
            return action(db)
        except SpeakerError as exc:
            raise fail(str(exc)) from None
