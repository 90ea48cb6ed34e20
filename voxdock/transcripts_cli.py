"""`voxdock show` and `voxdock export`: reading stored transcripts, in the terminal or as files."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from voxdock import exit_codes
from voxdock.engine.diarization_note import FAST_PATH

if TYPE_CHECKING:
    from voxdock.storage.database import Database
    from voxdock.storage.sources import StoredSource


def stored_sources(db: Database, path: str) -> list[StoredSource]:
    """What an operator means by `path`: the file or folder as discovery stored it (absolute, or
    through its links), or, for a path that does not exist here, every stored path containing it."""
    from voxdock.storage.sources import PathMatch, find_sources

    given = Path(path).expanduser()
    if not given.exists():
        return find_sources(db, path, match="contains")
    match: PathMatch = "folder" if given.is_dir() else "exact"
    return find_sources(db, str(given.absolute()), match=match) or find_sources(
        db, str(given.resolve()), match=match
    )


def one_stored_source(db: Database, path: str, *, otherwise: str = "") -> StoredSource:
    """The one stored file `path` names, or exit with one line: not stored (1), or several (2), with
    `otherwise` saying what to do instead."""
    from voxdock.cli import fail

    found = stored_sources(db, path)
    if not found:
        raise fail(not_stored(path), code=exit_codes.INCOMPLETE)
    if len(found) > 1:
        listed = ", ".join(s.path for s in found[:5]) + (", ..." if len(found) > 5 else "")
        raise fail(f"{len(found)} files match {path!r} ({listed}); name one{otherwise}")
    return found[0]


def not_stored(path: str) -> str:
    given = Path(path).expanduser()
    where = "under" if given.is_dir() else ("at" if given.exists() else "with a path containing")
    return f"no file stored {where} {path!r}"


def why_empty(status: str) -> str:
    """Why a source with this status has nothing to show."""
    if status == "done":
        return "no speech"
    return "failed" if status == "failed" else f"not processed yet ({status})"


def how_found(path: str, diarization: str | None) -> str | None:
    """How the file's speakers were found, with what to run where the monologue fast path took it
    (a conversation it took for one voice is diarized when told at least two speakers); None for files
    stored before this was kept."""
    if not diarization:
        return None
    if not diarization.startswith(FAST_PATH):
        return f"how found: {diarization}"
    rerun = f"voxdock ingest --no-skip-existing --min-speakers 2 {shlex.quote(path)}"
    return f"how found: {diarization}; to diarize it with at least two speakers: {rerun}"


def how_heard(audio_note: str | None) -> str | None:
    """What the decoder did with the file's audio that a reader should know (several audio streams,
    a channel in opposite polarity); None when nothing, or for files stored before this was kept."""
    return f"audio: {audio_note}" if audio_note else None


def show(
    path: Annotated[str, typer.Argument(help="A processed file, or part of its stored path.")],
) -> None:
    """A file's transcript: time, speaker (the enrolled name when known) and text, one row per segment;
    paged when longer than the terminal."""
    from rich.markup import escape
    from rich.table import Table

    from voxdock.cli import open_store, out, settings_or_exit, setup_logging
    from voxdock.formatting import fmt_clock, fmt_duration
    from voxdock.storage.transcripts import read_transcript

    settings = settings_or_exit()
    setup_logging("WARNING")
    with open_store(settings) as db:
        transcript = read_transcript(db, one_stored_source(db, path, otherwise=", or use `voxdock export`"))
    source = transcript.source
    if not transcript.segments:
        out.print(f"{source.path}: no transcript ({why_empty(source.status)})", highlight=False, markup=False)
        raise typer.Exit(exit_codes.INCOMPLETE)
    names = transcript.speaker_names()
    labels = sorted({s.speaker for s in transcript.segments if s.speaker})
    who = ", ".join(f"{names[label]} ({label})" if label in names else label for label in labels)
    title = f"[bold]{escape(source.path)}[/]  {fmt_duration(source.duration_s)}"
    title += f", {len(transcript.segments)} segments" + (f", speakers: {escape(who)}" if who else "")
    if source.status != "done":
        title += f" [yellow]({escape(source.status)}; transcript from its last run)[/]"
    for line in (how_found(source.path, source.diarization), how_heard(source.audio_note)):
        if line:
            title += f"\n[dim]{escape(line)}[/]"
    table = Table(box=None, show_header=False, pad_edge=False, expand=False)
    table.add_column("at", style="dim", no_wrap=True)
    table.add_column("speaker", style="bold", no_wrap=True)
    table.add_column("text", overflow="fold")
    for segment in transcript.segments:
        table.add_row(fmt_clock(segment.start_s), escape(segment.who or ""), escape(segment.text))
    if out.is_terminal and len(transcript.segments) + 2 > out.height:
        os.environ.setdefault("LESS", "-RFX")  # keep colours, quit at the end of a short page
        with out.pager(styles=True):
            out.print(title, highlight=False)
            out.print(table)
    else:
        out.print(title, highlight=False)
        out.print(table)


def export(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Processed files or folders, or parts of stored paths.")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="srt, vtt, txt, json, jsonl, rttm or tsv.", show_default=False),
    ] = "",
    batch: Annotated[str | None, typer.Option("--batch", help="Every file of this batch.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Write one file per source here (NAME.FORMAT); else standard output."),
    ] = None,
) -> None:
    """Write transcripts as subtitles (speaker names in them), text, JSON (with word times), RTTM or
    TSV: one file per source into --out, or one source (any number for jsonl and rttm) to standard
    output."""
    from voxdock.cli import err, fail, open_store, settings_or_exit, setup_logging
    from voxdock.exports import FORMATS, LINE_FORMATS, export_names, render
    from voxdock.storage.jobs import BatchNotFound, find_batch
    from voxdock.storage.sources import batch_sources
    from voxdock.storage.transcripts import read_transcript

    if fmt not in FORMATS:
        given = f"unknown format {fmt!r}" if fmt else "no --format given"
        raise fail(f"{given}: use one of {', '.join(FORMATS)}")
    if not paths and batch is None:
        raise fail("nothing to export: give files or folders, or --batch NAME")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise fail(f"--out {str(out_dir)!r} is a file, not a folder")
    settings = settings_or_exit()
    setup_logging("WARNING")
    with open_store(settings) as db:
        sources: dict[int, StoredSource] = {}
        if batch is not None:
            try:
                batch_id = find_batch(db, batch)
            except BatchNotFound as exc:
                raise fail(str(exc)) from None
            sources.update((s.id, s) for s in batch_sources(db, batch_id))
        for path in paths or []:
            found = stored_sources(db, path)
            if not found:
                raise fail(not_stored(path), code=exit_codes.INCOMPLETE)
            sources.update((s.id, s) for s in found)
        chosen = sorted(sources.values(), key=lambda s: s.path)
        if out_dir is None and len(chosen) > 1 and fmt not in LINE_FORMATS:
            raise fail(f"{len(chosen)} files to export as {fmt}: give --out DIR for one file each")
        transcripts = [read_transcript(db, source) for source in chosen]
    names = export_names([t.path for t in transcripts])
    written = 0
    for transcript in transcripts:
        source = transcript.source
        if not transcript.segments and not transcript.turns:
            err.print(
                f"{source.path}: nothing to export ({why_empty(source.status)})",
                highlight=False,
                markup=False,
            )
            continue
        if source.status != "done":
            err.print(
                f"{source.path}: {source.status}; exported from its last run", highlight=False, markup=False
            )
        text = render(transcript, fmt, names[source.path])
        if out_dir is None:
            sys.stdout.write(text)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            target = out_dir / f"{names[source.path]}.{fmt}"
            target.write_text(text, encoding="utf-8")
            err.print(f"{target}", highlight=False, markup=False)
        written += 1
    if not written:
        raise typer.Exit(exit_codes.INCOMPLETE)
