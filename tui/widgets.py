"""The console's panels. Each renders from a ConsoleData and touches only cells that changed, so a
steady screen costs few bytes per second over SSH."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Label, RichLog, Sparkline, Static
from textual.widgets.data_table import ColumnKey, RowKey

from voxdock.engine.diarization_note import short_note
from voxdock.engine.engine import JobRow
from voxdock.engine.events import EngineEvent
from voxdock.engine.metrics import EngineSnapshot, GpuSnapshot
from voxdock.engine.speakers import SpeakerOptions
from voxdock.engine.vram import VramSnapshot
from voxdock.formatting import (
    estimate_eta,
    fmt_duration,
    fmt_rtf,
    text_bar,
    utilization_label,
    vram_label,
)
from voxdock.tui.backend import ConsoleData

Cell = str | Text


def _set_cell(table: DataTable, row_key: str, column_key: ColumnKey, value: Cell) -> None:
    """Change one cell and repaint only that cell.

    DataTable.update_cell repaints the whole table, so a stage table whose RTF cells change every
    second sent every line of it down the SSH link each second. This writes the cell and refreshes
    its region alone; a value wider than its column goes through update_cell to resize it.
    """
    column = table.columns[column_key]
    width = value.cell_len if isinstance(value, Text) else len(str(value))
    data = getattr(table, "_data", None)
    if width > column.content_width or data is None or not hasattr(table, "_update_count"):
        table.update_cell(row_key, column_key, value, update_width=True)
        return
    data[RowKey(row_key)][column_key] = value
    table._update_count += 1  # invalidates the table's cached row renders
    table.refresh_coordinate(Coordinate(table.get_row_index(row_key), table.get_column_index(column_key)))


def sync_table(
    table: DataTable, rows: Sequence[tuple[str, Sequence[Cell]]], *, rebuild: bool = False
) -> None:
    """Make `table` show `rows` (key, cells): update changed cells in place; rebuild only when the set
    or order of rows changed (or `rebuild`: column widths follow the new cells), keeping the cursor on
    the same key."""
    keys = [key for key, _ in rows]
    current = [str(row_key.value) for row_key in table.rows]
    columns = list(table.columns)
    if keys != current or rebuild:
        cursor_key = current[table.cursor_row] if current and 0 <= table.cursor_row < len(current) else None
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if cursor_key in keys:
            table.move_cursor(row=keys.index(cursor_key), animate=False)
        return
    for key, cells in rows:
        for column_key, value in zip(columns, cells, strict=True):
            if table.get_cell(key, column_key) != value:
                _set_cell(table, key, column_key, value)


class StageTable(DataTable):
    """One row per stage; the bottleneck is marked with ▶ and bold (not by colour alone)."""

    COLUMNS = (
        ("stage", "stage"),
        ("rtf_now", "RTF now"),
        ("rtf_run", "RTF run"),
        ("queue", "queue"),
        ("workers", "workers"),
        ("batch", "batch"),
        ("items", "items"),
        ("errors", "err"),
        ("oom", "OOM"),
    )

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = False
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def show(self, snapshot: EngineSnapshot) -> None:
        rows = []
        # With self-tuning on, a knob the operator set is marked: the tuner leaves it alone.
        pinned = set(snapshot.pinned) if snapshot.auto_tune else set()
        for s in snapshot.stages:
            name = Text(
                ("▶ " if s.bottleneck else "  ") + s.name, style="bold reverse" if s.bottleneck else ""
            )
            if s.batch_size is None:
                batch = "-"
            elif s.batch_size_now is not None and s.batch_size_now < s.batch_size:
                batch = f"{s.batch_size_now}/{s.batch_size}"
            else:
                batch = str(s.batch_size)
            if f"{s.name}.batch" in pinned:
                batch += "*"
            workers = f"{s.workers_busy}/{s.workers}" + ("*" if f"{s.name}.workers" in pinned else "")
            rows.append(
                (
                    s.name,
                    (
                        name,
                        fmt_rtf(s.rtf_now),
                        fmt_rtf(s.rtf_run),
                        str(s.queue_depth),
                        workers,
                        batch,
                        str(s.items),
                        Text(str(s.errors), style="bold" if s.errors else ""),
                        Text(str(s.oom_backoffs), style="bold" if s.oom_backoffs else ""),
                    ),
                )
            )
        sync_table(self, rows)


class Quiet(Static):
    """A Static that repaints only when its text changes: every repaint goes down the SSH link."""

    _shown: str | None = None

    def show_text(self, text: str) -> None:
        if text != self._shown:
            self._shown = text
            self.update(text)


def pack_phrases(groups: Sequence[Sequence[str]], width: int) -> list[str]:
    """Each group's phrases joined by ' · ' on as few lines as `width` allows, continuation lines
    indented; a phrase is never split (so '12.1 h/h' never loses its unit to the next line). Phrases
    may hold markup; widths count only what shows."""
    lines: list[str] = []
    for group in groups:
        line, used = "", 0
        for phrase in group:
            size = Text.from_markup(phrase).cell_len
            if line and used + 3 + size > width:
                lines.append(line)
                line, used = "  " + phrase, 2 + size
            else:
                line, used = (f"{line} · {phrase}", used + 3 + size) if line else (phrase, size)
        if line:
            lines.append(line)
    return lines


class Totals(Quiet):
    """Throughput, totals, and what is in flight, packed into the width the panel has."""

    _last_data: ConsoleData | None = None

    def show(self, data: ConsoleData) -> None:
        self._last_data = data
        t = data.snapshot.totals
        now = f"{t.hours_per_hour_now:.1f}" if t.hours_per_hour_now else "-"
        run = f"{t.hours_per_hour:.1f}" if t.hours_per_hour else "-"
        end_to_end = 1 / t.hours_per_hour if t.hours_per_hour else None  # wall s per audio s, live
        threshold = data.snapshot.fast_path_threshold
        groups = [
            [
                f"[b]throughput[/] {now} h/h now",
                f"{run} h/h run",
                f"RTF {fmt_rtf(end_to_end)}",
                f"audio {fmt_duration(t.audio_s_done)}",
            ],
            [
                f"[b]files[/] {t.files_done} done",
                f"{t.files_failed} failed",
                f"{t.files_skipped} skipped",
                f"{t.files_in_flight} in flight",
            ],
            [
                f"[b]segments[/] {t.segments_written}",
                f"[b]fast path[/] {t.fast_path_skips} skipped (threshold {threshold:.3f})",
            ],
        ]
        if data.snapshot.auto_tune:
            groups.append(["[b]self-tuning[/] on", "* = set by hand, left alone"])
        # The engine's own word while it waits for the store; else why this picture is stale.
        problem = data.snapshot.store_problem or (
            f"database unavailable, retrying: {data.error}" if data.error else None
        )
        if problem:
            groups.append([f"[b reverse]{escape(problem)}[/]"])
        # Before the first layout the width is 0: one line per group until the resize repacks it.
        width = self.content_region.width or 1000
        self.show_text("\n".join(pack_phrases(groups, width)))

    def on_resize(self) -> None:
        if self._last_data is not None:
            self.show(self._last_data)


class GpuRow(Horizontal):
    def __init__(self, index: int) -> None:
        super().__init__(id=f"gpu-{index}", classes="gpu-row")
        self.index = index

    def compose(self) -> ComposeResult:
        yield Label("", classes="gpu-label")
        yield Sparkline([], classes="gpu-util")
        yield Label("", classes="gpu-mem-label")
        yield Sparkline([], classes="gpu-mem")

    def show(self, latest: GpuSnapshot, history: Sequence[GpuSnapshot], vram: VramSnapshot | None) -> None:
        self.query_one(".gpu-label", Label).update(f"GPU{latest.index} {utilization_label(latest)}")
        busy = self.query_one(".gpu-util", Sparkline)
        busy.display = latest.utilization_pct is not None  # a MIG slice has none: no flat "0% busy" line
        busy.data = [h.utilization_pct or 0.0 for h in history] or [0.0]
        self.query_one(".gpu-mem-label", Label).update(vram_label(latest, vram))
        self.query_one(".gpu-mem", Sparkline).data = [h.memory_used_mb for h in history] or [0.0]


class GpuPanel(Vertical):
    """Per device utilisation and VRAM with the last minutes as sparklines; one line when no GPU."""

    def compose(self) -> ComposeResult:
        yield Quiet("GPU: waiting for the first sample", id="gpu-none")

    def show(self, data: ConsoleData) -> None:
        snapshot = data.snapshot
        none = self.query_one("#gpu-none", Quiet)
        if not snapshot.gpu_available:
            # Once the engine knows it runs on CPU, it says so of the VRAM budget too.
            none.show_text("no GPU: running on CPU" + (", no VRAM budget" if snapshot.vram else ""))
            if not self.has_class("no-gpu"):
                self.set_class(True, "no-gpu")
            return
        if none.display == bool(snapshot.gpus):
            none.display = not snapshot.gpus
        self.set_class(False, "no-gpu")
        for gpu in snapshot.gpus:
            rows = self.query(f"#gpu-{gpu.index}")
            row = rows.first(GpuRow) if rows else None
            history = data.gpu_history.get(gpu.index, [gpu])
            if row is None:
                row = GpuRow(gpu.index)
                self.mount(row)
                self.call_after_refresh(row.show, gpu, history, snapshot.vram)  # once its children exist
                continue
            row.show(gpu, history, snapshot.vram)


BAR_FROM_WIDTH = 96  # columns of the batch table from which its progress column has a bar


class BatchTable(DataTable):
    _last_data: ConsoleData | None = None
    _bar = 10  # width of the progress bars shown

    COLUMNS = (
        ("id", "id"),
        ("name", "batch"),
        ("state", "state"),
        ("progress", "progress"),
        ("done", "done"),
        ("failed", "failed"),
        ("skipped", "skip"),
        ("left", "left"),
        ("eta", "ETA"),
        ("speakers", "speakers"),
    )

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def selected_batch(self) -> int | None:
        if not self.row_count or self.cursor_row < 0:
            return None
        key = list(self.rows)[self.cursor_row].value
        return int(key) if key is not None else None

    def on_resize(self) -> None:
        if self._last_data is not None:
            self.show(self._last_data)

    def show(self, data: ConsoleData) -> None:
        self._last_data = data
        totals = data.snapshot.totals
        pace = totals.hours_per_hour_now or totals.hours_per_hour
        # In 80 columns the bar would push the last columns out of sight: the percentage says it all.
        bar = 10 if self.size.width >= BAR_FROM_WIDTH else 0
        rebuild = bar != self._bar
        if rebuild:
            self._bar = bar
            # A column only ever grows to its widest cell: let this one fit the new cells again.
            column = self.columns.get(ColumnKey("progress"))
            if column is not None:
                column.content_width = column.label.cell_len
        rows = []
        for b in data.batches:
            finished = b.done + b.failed + b.skipped
            fraction = finished / b.total if b.total else 0.0
            left = b.queued + b.claimed
            state = b.state if left or b.state != "running" else "done"
            eta = fmt_duration(estimate_eta(left, b.done, b.audio_seconds_done, pace)) if left else ""
            rows.append(
                (
                    str(b.id),
                    (
                        str(b.id),
                        b.name,
                        Text(state, style="bold" if state == "paused" else ""),
                        f"{text_bar(fraction, bar)} {fraction:4.0%}" if bar else f"{fraction:4.0%}",
                        str(b.done),
                        Text(str(b.failed), style="bold" if b.failed else ""),
                        str(b.skipped),
                        str(left),
                        eta,
                        SpeakerOptions.from_options(b.options).describe(),
                    ),
                )
            )
        sync_table(self, rows, rebuild=rebuild)


def speakers_cell(row: JobRow) -> str:
    """Who speaks in a stored file: its enrolled names, then how many others stay anonymous; and how
    they were found where that was not plain diarization (the monologue fast path, by channel)."""
    names = list(row.speaker_names)
    others = max((row.speaker_count or 0) - len(names), 0)
    if not names:
        who = str(row.speaker_count) if row.speaker_count is not None else ""
    else:
        who = ", ".join(names) + (f" +{others}" if others else "")
    how = short_note(row.diarization)
    return f"{who} ({how})" if who and how else who


class FileTable(DataTable):
    COLUMNS = (
        ("file", "file"),
        ("state", "state"),
        ("audio", "audio"),
        ("segments", "segs"),
        ("speakers", "speakers"),
        ("attempts", "tries"),
        ("reason", "reason"),
    )

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def show(self, data: ConsoleData) -> None:
        stage_of = dict(data.in_flight)
        rows = []
        for f in data.files:
            state = f.state
            if f.state == "claimed":
                state = f"{stage_of.get(f.path, 'claimed')}…"
            rows.append(
                (
                    str(f.job_id),
                    (
                        Path(f.path).name,
                        Text(state, style="bold" if f.state == "failed" else ""),
                        fmt_duration(f.duration_s) if f.duration_s else "",
                        str(f.segment_count) if f.state == "done" else "",
                        speakers_cell(f) if f.state == "done" else "",
                        str(f.attempts),
                        f.last_error or "",
                    ),
                )
            )
        sync_table(self, rows)

    def selected_reason(self, data: ConsoleData) -> str | None:
        if not self.row_count or self.cursor_row < 0 or self.cursor_row >= len(data.files):
            return None
        row = data.files[self.cursor_row]
        return f"{row.path}: {row.last_error}" if row.last_error else row.path


class NodeTable(DataTable):
    COLUMNS = (
        ("node", "node"),
        ("state", "state"),
        ("seen", "seen"),
        ("hph", "h/h"),
        ("done", "done"),
        ("failed", "failed"),
        ("flight", "in flight"),
    )

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def show(self, data: ConsoleData) -> None:
        rows = []
        for n in data.nodes:
            totals = n.metrics.get("totals", {}) if isinstance(n.metrics, dict) else {}
            hph = totals.get("hours_per_hour")
            me = " (this)" if n.id == data.snapshot.node_id else ""
            rows.append(
                (
                    n.id,
                    (
                        n.id + me,
                        n.state,
                        f"{n.seconds_since_heartbeat:.0f}s ago",
                        f"{hph:.1f}" if hph else "-",
                        str(totals.get("files_done", 0)),
                        str(totals.get("files_failed", 0)),
                        str(totals.get("files_in_flight", 0)),
                    ),
                )
            )
        sync_table(self, rows)


class LogPane(RichLog):
    """Engine events, newest at the bottom; warnings and errors stand out by a marker, not only colour."""

    def add(self, events: Sequence[EngineEvent]) -> None:
        for event in events:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
            marker, style = (
                ("✗", "bold") if event.level >= 40 else ("!", "bold") if event.level >= 30 else ("·", "")
            )
            self.write(Text.assemble((f"{stamp} ", "dim"), (f"{marker} ", style), (event.message, style)))
