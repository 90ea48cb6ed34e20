"""`voxdock ingest`: the engine without the console, with rich progress bars and a summary."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from voxdock.engine.engine import Engine
from voxdock.engine.events import EngineEvent
from voxdock.engine.metrics import EngineSnapshot
from voxdock.engine.vram import gib
from voxdock.formatting import estimate_eta, fmt_duration, fmt_rtf, utilization_label, vram_label
from voxdock.storage import jobs
from voxdock.storage.database import is_store_unavailable
from voxdock.storage.jobs import BatchProgress

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class IngestOutcome:
    batch: BatchProgress
    failures: list[jobs.JobRow]
    snapshot: EngineSnapshot
    wall_s: float
    interrupted: bool
    terminated: bool = False  # the interruption was SIGTERM
    engine_error: str | None = None  # set when the engine could not start or failed
    engine_started: bool = False  # whether it ever ran (else it failed while loading models)


def batch_eta(progress: BatchProgress, snapshot: EngineSnapshot) -> float | None:
    pace = snapshot.totals.hours_per_hour_now or snapshot.totals.hours_per_hour
    return estimate_eta(progress.queued + progress.claimed, progress.done, progress.audio_seconds_done, pace)


class IngestDisplay:
    """Overall bar with RTF and ETA, and a line per file in flight with the stage it is at."""

    def __init__(self, console: Console, engine: Engine, batch_id: int, total: int) -> None:
        self.console = console
        self.engine = engine
        self.batch_id = batch_id
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("files", total=max(total, 1), detail="loading models…")

    def render(self, progress: BatchProgress, snapshot: EngineSnapshot, problem: str | None = None) -> Group:
        """The bars from `progress` (the last figures read, while the database is away) and what the
        engine says; `problem` (e.g. the database is unavailable) leads the line."""
        finished = progress.done + progress.failed + progress.skipped + progress.cancelled
        totals = snapshot.totals
        e2e = 1 / totals.hours_per_hour if totals.hours_per_hour else None
        detail = (
            f"RTF {fmt_rtf(e2e)} · {totals.hours_per_hour or 0:.1f} h/h · ETA "
            f"{fmt_duration(batch_eta(progress, snapshot))} · {totals.segments_written} segments"
            if snapshot.state == "running"
            else snapshot.state + "…"
        )
        if problem:
            detail = f"[yellow]{escape(problem)}[/] · {detail}"
        if progress.failed:
            detail += f" · [red]{progress.failed} failed[/]"
        self.progress.update(self.task, completed=finished, total=max(progress.total, 1), detail=detail)
        lines = [self.progress.get_renderable()]
        for gpu in snapshot.gpus:  # a GPU host: is the device busy, and how full is it
            lines.append(
                Text(
                    f"  GPU{gpu.index} {utilization_label(gpu)} · {vram_label(gpu, snapshot.vram)}",
                    style="dim",
                )
            )
        for work in sorted(self.engine.in_flight_files(), key=lambda w: w.claimed_at)[:8]:
            elapsed = time.monotonic() - work.claimed_at
            length = f"{work.duration_s:.0f} s audio" if work.duration_s else ""
            lines.append(
                Text(
                    f"  {work.stage:<8} {Path(work.path).name}  {length}  {elapsed:.0f}s",
                    style="dim",
                    overflow="ellipsis",
                    no_wrap=True,
                )
            )
        return Group(*lines)


STORE_UNAVAILABLE = "database unavailable, retrying"
FINAL_READ_S = 120.0  # how long the summary waits for a database that went away at the very end


def run_ingest(
    engine: Engine, batch_id: int, total: int, console: Console, *, quiet: bool = False
) -> IngestOutcome:
    """Run the engine until the batch is finished; Ctrl-C or SIGTERM re-queues in-flight files and
    pauses it (a second Ctrl-C stops waiting for that). With `quiet`, nothing is shown while it runs.
    While the database is away the last figures stay on screen with what the engine says about it,
    and the run goes on when it is back."""
    db = engine.db
    interrupted = threading.Event()
    terminated = threading.Event()

    def on_interrupt(sig: int, _frame: FrameType | None) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        if sig == signal.SIGTERM:
            terminated.set()
        interrupted.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    previous_term = signal.signal(signal.SIGTERM, on_interrupt)
    # Events are shown above the bars; the engine's log would repeat them on stderr (the event hub
    # logs on "voxdock.engine" itself, and a logger's filter sees only its own records, not its
    # children's). A failure to start is the command's own one-line error.
    engine_log = logging.getLogger("voxdock.engine")
    engine_log.setLevel(logging.ERROR)
    engine_log.addFilter(_no_events)
    unsubscribe = engine.events.subscribe(lambda e: _print_event(console, e) if not quiet else None)
    started = False
    start = time.monotonic()
    display = IngestDisplay(console, engine, batch_id, total)
    progress = jobs.batch_progress(db, [batch_id])[0]
    try:
        engine.start()
        live: Live | None = None
        if not quiet:
            live = Live(
                display.render(progress, engine.snapshot()),
                console=console,
                refresh_per_second=4,
                transient=False,
                redirect_stderr=False,
            )
        with live if live is not None else contextlib.nullcontext():
            while True:
                snapshot = engine.snapshot()
                store_lost = False
                try:
                    progress = jobs.batch_progress(db, [batch_id])[0]
                except Exception as exc:
                    if not is_store_unavailable(exc):
                        raise
                    store_lost = True  # keep the last figures; the engine waits for the store too
                problem = snapshot.store_problem or (STORE_UNAVAILABLE if store_lost else None)
                if live is not None:
                    live.update(display.render(progress, snapshot, problem))
                started = started or engine.state == "running"
                if engine.state == "failed":
                    break
                if not store_lost and progress.left == 0 and engine.files_in_flight() == 0:
                    break
                if interrupted.is_set():
                    console.print(
                        "[yellow]interrupted: re-queuing the files in flight and pausing the batch…"
                    )
                    try:
                        jobs.set_batch_state(db, batch_id, "paused")
                    except Exception as exc:
                        if not is_store_unavailable(exc):
                            raise
                        console.print("[yellow]the database is unavailable: the batch could not be paused[/]")
                    break
                time.sleep(0.25)
        if live is not None:
            console.print()
        if engine.state == "loading":
            # Stopping an engine whose models are still loading leaves the loader running on, into
            # the claim loop, and a model library torn down under it at exit aborts the process: let
            # the load finish, then stop it as usual.
            console.print("[yellow]waiting for the models to finish loading…[/]")
            engine.wait_ready(timeout=300)
        error = engine.error if engine.state == "failed" else None
        # A failed engine finishes nothing more: hand its files back rather than wait for them.
        engine.stop(mode="requeue" if interrupted.is_set() or error else "finish", timeout=60)
    except BaseException:
        # Whatever broke the loop (a second Ctrl-C, the database gone), the engine's threads must not
        # outlive it holding files: hand them back, briefly, and let the error go on.
        if engine.state not in ("stopped", "created"):
            with contextlib.suppress(Exception):
                engine.stop(mode="requeue", timeout=5)
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        unsubscribe()
        engine_log.removeFilter(_no_events)
    progress = _read_when_back(console, lambda: jobs.batch_progress(db, [batch_id])[0])
    failures = _read_when_back(
        console, lambda: [row for row in jobs.batch_jobs(db, batch_id) if row.state == "failed"]
    )
    return IngestOutcome(
        progress,
        failures,
        engine.snapshot(),
        time.monotonic() - start,
        interrupted.is_set(),
        terminated=terminated.is_set(),
        engine_error=error,
        engine_started=started,
    )


def _read_when_back(console: Console, read: Callable[[], T], wait_s: float = FINAL_READ_S) -> T:
    """`read()`, retried while the database is unavailable, for up to `wait_s` (then its error)."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            return read()
        except Exception as exc:
            if not is_store_unavailable(exc) or time.monotonic() > deadline:
                raise
            if not said:
                console.print(f"[yellow]{STORE_UNAVAILABLE}[/]")
                said = True
            time.sleep(1.0)


def _no_events(_record: logging.LogRecord) -> bool:
    return False


def _print_event(console: Console, event: EngineEvent) -> None:
    if event.level >= logging.ERROR and event.kind == "engine":
        return  # the engine's own failure: the command ends with it as its one-line error
    if event.kind == "failed":
        console.print(f"[red]✗[/] {event.message}", highlight=False, soft_wrap=True)
    elif event.kind in ("tuning", "engine") and event.level >= logging.WARNING:
        console.print(f"[yellow]![/] {event.message}", highlight=False, soft_wrap=True)


def summary_tables(outcome: IngestOutcome) -> list[Table]:
    snap = outcome.snapshot
    # Light rules and one-word headers: nine columns fit an 80-column SSH terminal without clipping
    # a figure (the boxed table cut RTF 1.68e-05 to "1.68e…").
    stages = Table(
        title="per-stage real-time factor (processing s / audio s)",
        title_justify="left",
        box=box.SIMPLE_HEAVY,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        caption="OOM: times the stage halved its batch on running out of device memory",
        caption_justify="left",
    )
    for column in ("stage", "RTF", "audio", "busy", "items", "errors", "workers", "batch", "OOM"):
        stages.add_column(column, justify="left" if column == "stage" else "right", no_wrap=True)
    for s in snap.stages:
        stages.add_row(
            s.name,
            fmt_rtf(s.rtf_run),
            fmt_duration(s.audio_s),
            f"{s.busy_s:.1f} s",
            str(s.items),
            str(s.errors),
            str(s.workers),
            str(s.batch_size or "-"),
            str(s.oom_backoffs),
        )
    t = snap.totals
    p = outcome.batch
    totals = Table(show_header=False, box=None, title=f"batch {p.name}", title_justify="left")
    totals.add_column(style="bold")
    totals.add_column()
    e2e = 1 / t.hours_per_hour if t.hours_per_hour else None
    totals.add_row(
        "files",
        f"{p.done} done, {p.failed} failed, {p.skipped} skipped (already stored)"
        + (f", {p.cancelled} cancelled" if p.cancelled else "")
        + (f", {p.left} left" if p.left else ""),
    )
    totals.add_row(
        "audio",
        f"{fmt_duration(t.audio_s_done)} in {fmt_duration(outcome.wall_s)} wall "
        f"(end-to-end RTF {fmt_rtf(e2e)}, {t.hours_per_hour or 0:.1f} h of audio per hour)",
    )
    totals.add_row("segments", f"{t.segments_written} written")
    totals.add_row("fast path", f"{t.fast_path_skips} file(s) skipped diarization as monologues")
    vram = snap.vram
    if vram is not None and vram.budget_bytes is not None:
        used = "?" if vram.used_bytes is None else f"{gib(vram.used_bytes)} GiB"
        totals.add_row(
            "VRAM",
            f"{used} used of a {gib(vram.budget_bytes)} GiB budget ({vram.setting})"
            + (" OVER" if vram.over else ""),
        )
    tables = [stages, totals]
    if outcome.failures:
        failed = Table(title="failures", title_justify="left", title_style="bold red")
        failed.add_column("file", overflow="fold")
        failed.add_column("reason", overflow="fold")
        for row in outcome.failures:
            failed.add_row(row.path, row.last_error or "?")
        tables.append(failed)
    return tables
