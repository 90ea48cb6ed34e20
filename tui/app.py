"""The operator console: a Textual app over the live engine.

Data is gathered off the UI thread (a Textual thread worker calls the backend), and the screen only
renders that snapshot. Controls go to the engine from thread workers too, so a busy engine or a slow
database never freezes the keyboard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, TabbedContent, TabPane

from voxdock.engine.engine import BATCHED_STAGES
from voxdock.themes import DEFAULT_THEME, THEMES, console_css_path
from voxdock.tui.backend import ConsoleBackend, ConsoleData
from voxdock.tui.commands import COMMANDS, CONTROL_ACTIONS, bindings
from voxdock.tui.prefs import default_prefs_path, load_prefs, save_prefs
from voxdock.tui.screens import AddPathScreen, HelpScreen, QuitScreen, ThresholdScreen, TuneScreen
from voxdock.tui.widgets import (
    BatchTable,
    FileTable,
    GpuPanel,
    LogPane,
    NodeTable,
    Quiet,
    StageTable,
    Totals,
)

NARROW_BELOW = 120  # columns: under this the side panel moves under the stage table
WIDE_FROM = 150  # columns: from this the log also shows beside the batches


class VoxdockConsole(App[None]):
    CSS_PATH = console_css_path()
    # Read after CSS_PATH, so these win: how the layout fits the terminal, beside the breakpoints above.
    CSS = """
    /* The stage table as wide as its columns (no horizontal scrollbar to push the last stage out
       of its box); the throughput panel takes what is left and packs its lines to fit. */
    #stages {
        width: auto;
        max-width: 1fr;
    }
    #side {
        width: 1fr;
        min-width: 36;
    }
    /* Under NARROW_BELOW columns the panel sits under the stage table, full width, without a border:
       at 80x24 the stage table, the throughput and four batches all fit. */
    .narrow #stages {
        width: 1fr;
        max-width: 100%;
    }
    .narrow #side {
        border: none;
        padding: 0 1;
    }
    /* Room for the engine's use against its budget ("VRAM 126.9/126.9G budget"), fixed so that
       the sparklines beside it keep their place as the figures change. */
    .gpu-mem-label {
        width: 25;
    }
    """
    TITLE = "voxdock"
    BINDINGS: ClassVar[list[BindingType]] = list(bindings())

    def __init__(
        self,
        backend: ConsoleBackend,
        *,
        refresh_s: float = 1.0,
        readonly: bool = False,
        prefs_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        show_clock: bool = False,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.refresh_s = refresh_s
        self.readonly = readonly
        self.prefs_path = prefs_path or default_prefs_path()
        self.clock = clock
        self.show_clock = show_clock
        self.data: ConsoleData | None = None
        self.selected_batch: int | None = None
        self._gathering = False
        self._stopping = False
        self.applied_at: float | None = None  # when the last snapshot reached the screen (for benches)
        for theme in THEMES:
            self.register_theme(theme)
        saved = load_prefs(self.prefs_path).get("theme")
        self.theme = saved if saved in self.available_themes else DEFAULT_THEME

    # --- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.show_clock)
        with Horizontal(id="top"):
            stages = StageTable(id="stages")
            stages.border_title = "stages"
            yield stages
            with Vertical(id="side") as side:
                side.border_title = "throughput"
                yield Totals(id="totals")
                yield GpuPanel(id="gpu")
        with Horizontal(id="bottom-row"):
            with TabbedContent(id="bottom", initial="batches"):
                with TabPane("Batches", id="batches"):
                    yield BatchTable(id="batch-table")
                with TabPane("Files", id="files"):
                    yield FileTable(id="file-table")
                with TabPane("Log", id="log"):
                    yield LogPane(id="log-pane", max_lines=2000, wrap=False, markup=False)
                with TabPane("Nodes", id="nodes"):
                    yield NodeTable(id="node-table")
            side_log = LogPane(id="side-log", max_lines=2000, wrap=False, markup=False)
            side_log.border_title = "log"
            yield side_log
        yield Quiet("", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "starting…" + (" · read-only" if self.readonly else "")
        self._fit_layout(self.size.width)
        self.query_one(StageTable).focus()
        self.set_interval(self.refresh_s, self.request_refresh)
        self.request_refresh()

    def on_resize(self, event: events.Resize) -> None:
        # The event's size, not self.size: this handler runs before App's own, which updates that, so
        # self.size still held the previous size and the layout lagged one resize behind.
        self._fit_layout(event.size.width)

    def _fit_layout(self, width: int) -> None:
        self.set_class(width < NARROW_BELOW, "narrow")
        self.set_class(width >= WIDE_FROM, "wide")

    def watch_theme(self, theme: str) -> None:
        prefs = load_prefs(self.prefs_path)
        if prefs.get("theme") != theme:
            prefs["theme"] = theme
            save_prefs(self.prefs_path, prefs)

    # --- data ----------------------------------------------------------------------------------
    def request_refresh(self) -> None:
        if not self._gathering and not self._stopping:
            self._gathering = True
            self._gather(self.selected_batch)

    @work(thread=True, group="gather")
    def _gather(self, selected: int | None) -> None:
        data: ConsoleData | None
        try:
            data = self.backend.gather(selected)
        except Exception as exc:  # the store is down: keep the last picture, say so
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            data = replace(self.data, error=reason) if self.data is not None else None
            if data is None:
                self.call_from_thread(
                    self.notify, f"cannot read the engine's state: {reason}", severity="error"
                )
        events = self.backend.drain_events()
        self.call_from_thread(self._apply, data, events)

    def _apply(self, data: ConsoleData | None, events: list[Any]) -> None:
        self._gathering = False
        try:
            stages = self.query_one(StageTable)
        except NoMatches:  # a gather that ended while the console closed: nothing left to draw on
            return
        if events:
            for pane in self.query(LogPane):
                pane.add(events)
        if data is None:
            return
        self.data = data
        if self.selected_batch is None:
            self.selected_batch = data.selected_batch
        snap = data.snapshot
        device = "GPU" if snap.gpu_available else "CPU"
        readonly = " · read-only" if self.readonly else ""
        self.sub_title = f"node {snap.node_id} · {snap.state} · {device}{readonly}"
        stages.show(snap)
        self.query_one(Totals).show(data)
        self.query_one(GpuPanel).show(data)
        self.query_one(BatchTable).show(data)
        self.query_one(FileTable).show(data)
        self.query_one(NodeTable).show(data)
        self._show_detail()
        self.applied_at = self.clock()

    def _show_detail(self) -> None:
        detail = self.query_one("#detail", Quiet)
        if self.data is None:
            return
        tabs = self.query_one(TabbedContent)
        if tabs.active == "files":
            reason = self.query_one(FileTable).selected_reason(self.data)
            detail.show_text(reason or "")
        elif self.data.in_flight:
            names = ", ".join(f"{Path(p).name} ({s})" for p, s in self.data.in_flight[:4])
            detail.show_text(f"in flight: {names}")
        else:
            detail.show_text("idle: add a path with [b]a[/]" if not self.readonly else "idle")

    @on(BatchTable.RowHighlighted, "#batch-table")
    def _batch_highlighted(self, event: BatchTable.RowHighlighted) -> None:
        key = event.row_key.value
        if key is not None and int(key) != self.selected_batch:
            self.selected_batch = int(key)
            self.request_refresh()

    @on(FileTable.RowHighlighted, "#file-table")
    def _file_highlighted(self) -> None:
        self._show_detail()

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self._show_detail()

    # --- actions -------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # In read-only mode control actions are hidden from the footer and palette, and do nothing.
        return not (self.readonly and action in CONTROL_ACTIONS)

    def _control(self, describe: str, call: Callable[[], object]) -> None:
        """Run an engine call off the UI thread; report the outcome as a notification."""
        self._run_control(describe, call)

    @work(thread=True, group="control")
    def _run_control(self, describe: str, call: Callable[[], object]) -> None:
        try:
            call()
        except (ValueError, RuntimeError, LookupError) as exc:
            self.call_from_thread(self.notify, f"{describe}: {exc}", severity="error", title="refused")
            return
        self.call_from_thread(self.notify, describe, timeout=3)
        self.call_from_thread(self.request_refresh)

    def _on_selected_batch(self, describe: str, call: Callable[[ConsoleBackend, int], object]) -> None:
        """Run a control on the selected batch, or say there is none."""
        batch = self.selected_batch
        if batch is None:
            self.notify("no batch selected", severity="warning")
            return
        self._control(describe.format(batch=batch), lambda: call(self.backend, batch))

    def action_pause(self) -> None:
        self._on_selected_batch("batch {batch} paused", lambda b, batch: b.pause(batch))

    def action_resume(self) -> None:
        self._on_selected_batch("batch {batch} resumed", lambda b, batch: b.resume(batch))

    def action_cancel(self) -> None:
        self._on_selected_batch("batch {batch} cancelled", lambda b, batch: b.cancel(batch))

    def action_retry(self) -> None:
        self._on_selected_batch(
            "batch {batch}: failed and cancelled files queued", lambda b, batch: b.retry(batch)
        )

    def _selected_stage(self) -> str | None:
        """The stage under the stage table's cursor (asr before the table has rows); None while the
        engine is still loading, which is said."""
        if self.data is None or not self.data.snapshot.stages:
            self.notify("the engine is still loading", severity="warning")
            return None
        table = self.query_one(StageTable)
        return self.data.snapshot.stages[table.cursor_row].name if table.row_count else "asr"

    def action_release(self) -> None:
        stage = self._selected_stage()
        if stage is not None:
            self._control(f"{stage}: released to self-tuning", lambda: self.backend.release(stage))

    def _stage_workers(self, stage: str) -> int | None:
        if self.data is None:
            return None
        for s in self.data.snapshot.stages:
            if s.name == stage:
                return s.workers
        return None

    def action_asr_more(self) -> None:
        self._change_asr_workers(+1)

    def action_asr_less(self) -> None:
        self._change_asr_workers(-1)

    def _change_asr_workers(self, delta: int) -> None:
        current = self._stage_workers("asr")
        if current is None:
            self.notify("the engine is still loading", severity="warning")
            return
        target = current + delta
        self._control(f"asr workers {current} → {target}", lambda: self.backend.set_workers("asr", target))

    def action_tune(self) -> None:
        selected = self._selected_stage()
        if selected is None or self.data is None:
            return
        current = {s.name: (s.workers, s.batch_size) for s in self.data.snapshot.stages}
        self.push_screen(TuneScreen(current, selected), self._tuned)

    def _tuned(self, result: tuple[str, int | None, int | None] | None) -> None:
        if result is None:
            return
        stage, workers, batch = result

        def apply() -> None:
            if workers is not None:
                self.backend.set_workers(stage, workers)
            if batch is not None and stage in BATCHED_STAGES:
                self.backend.set_batch_size(stage, batch)

        what = f"{stage}: workers {workers}" + (f", batch size {batch}" if batch is not None else "")
        self._control(what, apply)

    def action_threshold(self) -> None:
        current = self.data.snapshot.fast_path_threshold if self.data else 0.5
        self.push_screen(ThresholdScreen(current), self._threshold_set)

    def _threshold_set(self, value: float | None) -> None:
        if value is not None:
            self._control(
                f"fast-path threshold {value:.3f}", lambda: self.backend.set_fast_path_threshold(value)
            )

    def action_add_path(self) -> None:
        self.push_screen(AddPathScreen(), self._path_added)

    def _path_added(self, result: tuple[str, str | None, dict[str, int]] | None) -> None:
        if result is None:
            return
        path, name, options = result
        self._submit([path], name, options)

    @work(thread=True, group="control")
    def _submit(self, paths: list[str], name: str | None, options: dict[str, int] | None = None) -> None:
        try:
            sub = self.backend.submit(paths, name, options)
        except Exception as exc:
            self.call_from_thread(self.notify, f"could not add {paths[0]}: {exc}", severity="error")
            return
        message = f"batch {sub.name}: {sub.queued} file(s) queued"
        if sub.skipped:
            message += f", {sub.skipped} already stored"
        self.call_from_thread(self.notify, message)
        self.call_from_thread(self._select_batch, sub.batch_id)  # UI state changes on the UI thread

    def _select_batch(self, batch_id: int) -> None:
        self.selected_batch = batch_id
        self.request_refresh()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        widgets: dict[str, type[Widget]] = {
            "batches": BatchTable,
            "files": FileTable,
            "log": LogPane,
            "nodes": NodeTable,
        }
        focus = widgets[tab]
        self.query_one(f"#{tab}").query_one(focus).focus()  # arrows now move in what is shown

    def action_next_theme(self) -> None:
        names = [t.name for t in THEMES] + sorted(
            n for n in self.available_themes if not n.startswith("voxdock-")
        )
        index = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(index + 1) % len(names)]
        self.notify(f"theme: {self.theme}", timeout=2)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_quit_console(self) -> None:
        in_flight = self.data.snapshot.totals.files_in_flight if self.data else 0
        if self.readonly or in_flight == 0:
            self._begin_shutdown("requeue" if in_flight else "finish")
            return
        self.push_screen(QuitScreen(in_flight), self._quit_chosen)

    def _quit_chosen(self, choice: str | None) -> None:
        if choice is not None:
            self._begin_shutdown(choice)

    def _begin_shutdown(self, mode: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        verb = "finishing" if mode == "finish" else "re-queuing"
        self.sub_title = f"stopping: {verb} the files in flight…"
        self.notify(f"stopping: {verb} the files in flight…", timeout=30)
        self._stop_engine(mode)

    @work(thread=True, group="stop")
    def _stop_engine(self, mode: str) -> None:
        try:
            self.backend.stop(mode)
        finally:
            self.call_from_thread(self.exit)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for command in COMMANDS:
            if command.control and self.readonly:
                continue
            yield SystemCommand(command.title, command.description, partial(self.run_action, command.action))
