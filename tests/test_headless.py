"""The headless ingest loop: the database going away for a while, -q, and the summary's figures."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from console_states import T0, snapshot
from rich.console import Console

from voxdock import headless
from voxdock.engine.events import EventHub
from voxdock.engine.metrics import EngineSnapshot
from voxdock.storage.jobs import BatchProgress


def progress(left: int, done: int) -> BatchProgress:
    return BatchProgress(
        id=7,
        name="outage",
        state="running" if left else "done",
        created_at=T0,
        total=left + done,
        queued=left,
        claimed=0,
        done=done,
        failed=0,
        skipped=0,
        audio_seconds_done=60.0 * done,
        audio_seconds_total=None,
    )


class FakeEngine:
    """What run_ingest uses of an Engine; the engine says the store is away while `problem` is set."""

    def __init__(self) -> None:
        self.db: Any = object()
        self.events = EventHub()
        self.state = "created"
        self.error: str | None = None
        self.problem: str | None = None
        self.stopped_with: str | None = None

    def start(self) -> None:
        self.state = "running"

    def snapshot(self) -> EngineSnapshot:
        return replace(snapshot(), store_problem=self.problem)

    def files_in_flight(self) -> int:
        return 0

    def in_flight_files(self) -> list[Any]:
        return []

    def wait_ready(self, timeout: float | None = None) -> bool:
        return True

    def stop(self, mode: str = "finish", timeout: float | None = None) -> bool:
        self.stopped_with, self.state = mode, "stopped"
        return True


def script_store(monkeypatch: pytest.MonkeyPatch, engine: FakeEngine, outage_polls: int) -> list[str]:
    """batch_progress: one file left, then `outage_polls` reads that fail as a server restart does
    (while the engine reports the outage too), then the batch finished. batch_jobs fails once."""
    calls: list[str] = []

    def batch_progress(_db: object, _ids: list[int]) -> list[BatchProgress]:
        calls.append("progress")
        n = calls.count("progress")
        if n == 1:
            return [progress(left=1, done=1)]
        if n <= 1 + outage_polls:
            engine.problem = "database unavailable since 12:00:01, retrying"
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        engine.problem = None
        return [progress(left=0, done=2)]

    def batch_jobs(_db: object, _batch: int) -> list[Any]:
        calls.append("jobs")
        if calls.count("jobs") == 1:
            raise psycopg.OperationalError("connection refused")
        return []

    monkeypatch.setattr(headless.jobs, "batch_progress", batch_progress)
    monkeypatch.setattr(headless.jobs, "batch_jobs", batch_jobs)
    monkeypatch.setattr(headless, "FINAL_READ_S", 10.0)
    return calls


def test_the_progress_loop_waits_out_a_database_that_went_away(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine()
    calls = script_store(monkeypatch, engine, outage_polls=8)  # 2 s of the database away
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    outcome = headless.run_ingest(engine, 7, 2, console)  # type: ignore[arg-type]
    shown = screen.getvalue()
    assert "database unavailable since 12:00:01, retrying" in shown  # what the engine says
    assert "Traceback" not in shown
    assert calls.count("progress") >= 10  # it kept polling through the outage
    assert (outcome.batch.done, outcome.batch.left, outcome.failures) == (2, 0, [])
    assert outcome.engine_error is None and not outcome.interrupted
    assert engine.stopped_with == "finish"


def test_without_the_engines_word_the_display_says_the_database_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = FakeEngine()
    script_store(monkeypatch, engine, outage_polls=8)
    display = headless.IngestDisplay(Console(file=io.StringIO()), engine, 7, 2)  # type: ignore[arg-type]
    text = Console(file=io.StringIO(), width=200, record=True)
    text.print(display.render(progress(1, 1), snapshot(), headless.STORE_UNAVAILABLE))
    assert "database unavailable, retrying" in text.export_text()


def test_a_query_error_is_not_taken_for_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine()
    calls: list[int] = []

    def batch_progress(_db: object, _ids: list[int]) -> list[BatchProgress]:
        calls.append(1)
        if len(calls) > 1:
            raise psycopg.errors.UndefinedTable('relation "batch_status" does not exist')
        return [progress(left=1, done=0)]

    monkeypatch.setattr(headless.jobs, "batch_progress", batch_progress)
    with pytest.raises(psycopg.errors.UndefinedTable):
        headless.run_ingest(engine, 7, 1, Console(file=io.StringIO()))  # type: ignore[arg-type]
    assert engine.stopped_with == "requeue"  # its files were handed back on the way out


def test_quiet_shows_nothing_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine()
    script_store(monkeypatch, engine, outage_polls=0)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    outcome = headless.run_ingest(engine, 7, 2, console, quiet=True)  # type: ignore[arg-type]
    # Only the note that the final read had to wait for the database; no bar, no figures.
    assert screen.getvalue().strip() == "database unavailable, retrying", screen.getvalue()
    assert outcome.batch.done == 2


def test_end_to_end_rtf_is_the_inverse_of_the_throughput() -> None:
    snap = snapshot()  # 11.3 h of audio per hour, active clock 480 s for 5400 s of audio
    outcome = headless.IngestOutcome(progress(0, 2), [], snap, 500.0, False)
    text = Console(file=io.StringIO(), width=200, record=True)
    for table in headless.summary_tables(outcome):
        text.print(table)
    shown = text.export_text()
    assert "end-to-end RTF 0.0885" in shown, shown  # 1 / 11.3, not 480 / 5400 = 0.0889


def test_on_a_gpu_host_the_display_and_summary_show_the_device_and_the_vram_budget() -> None:
    from console_states import gpu_history, vram

    gpu = replace(snapshot(), gpus=[gpu_history()[0][-1]], gpu_available=True, vram=vram())
    display = headless.IngestDisplay(Console(file=io.StringIO()), FakeEngine(), 7, 2)  # type: ignore[arg-type]
    text = Console(file=io.StringIO(), width=200, record=True)
    text.print(display.render(progress(1, 1), gpu))
    for table in headless.summary_tables(headless.IngestOutcome(progress(0, 2), [], gpu, 500.0, False)):
        text.print(table)
    shown = text.export_text()
    assert "GPU0  98% · VRAM 31.4/71.7G budget" in shown, shown
    assert "31.4 GiB used of a 71.7 GiB budget (default: 10% of the card left free)" in shown, shown
    # On CPU neither line appears.
    text = Console(file=io.StringIO(), width=200, record=True)
    text.print(display.render(progress(1, 1), snapshot()))
    for table in headless.summary_tables(
        headless.IngestOutcome(progress(0, 2), [], snapshot(), 500.0, False)
    ):
        text.print(table)
    assert "VRAM" not in text.export_text() and "GPU0" not in text.export_text()


def test_the_stage_table_shows_every_figure_whole_on_an_80_column_terminal() -> None:
    # An hour of audio, the voice stage's RTF in scientific notation: the widest figures a run gives.
    stages = [
        replace(s, rtf_run=1.68e-05 if s.name == "voice" else 0.00765, audio_s=3690.5, busy_s=1225.2)
        for s in snapshot(oom=True).stages
    ]
    outcome = headless.IngestOutcome(progress(0, 2), [], replace(snapshot(), stages=stages), 500.0, False)
    text = Console(file=io.StringIO(), width=80, record=True)
    text.print(headless.summary_tables(outcome)[0])
    shown = text.export_text()
    assert "…" not in shown, shown
    assert "1.68e-05" in shown and "0.00765" in shown and "1:01:30" in shown and "1225.2 s" in shown, shown
    assert all(len(line) <= 80 for line in shown.splitlines())
