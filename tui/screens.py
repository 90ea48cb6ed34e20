"""Modal screens: help, tuning, fast-path threshold, adding a path, and quitting with work in flight."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.validation import Integer, Number
from textual.widgets import Button, Input, Label, Markdown, Select, Static

from voxdock.engine.config import MAX_BATCH_SIZE, MAX_WORKERS
from voxdock.engine.engine import BATCHED_STAGES, STAGES
from voxdock.engine.speakers import SpeakerOptions
from voxdock.tui.commands import key_table

HELP_TEXT = """\
# voxdock console

The engine runs inside this console; every file goes
decode → vad → asr → diarize → voice → text → store.

**Stage table.** RTF (real-time factor) = processing seconds per second of audio, over the last 30 s
(*now*) and since start (*run*). *workers* is busy/total, *batch* shows `now/configured` after a GPU
out-of-memory backoff. The stage marked **▶** limits throughput (highest RTF per worker). With
self-tuning on, `*` marks a knob set by hand, which the tuner leaves alone until released.

{keys}

In `--readonly` mode only viewing keys work.
"""
HELP = HELP_TEXT.format(keys=key_table())


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body", classes="dialog"):
            yield Markdown(HELP)
            yield Button("Close", id="close", variant="primary", compact=True)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)


class TuneScreen(ModalScreen[tuple[str, int | None, int | None] | None]):
    """Pick a stage; set its workers and (for batched stages) batch size. Returns (stage, workers, batch)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, current: dict[str, tuple[int, int | None]], stage: str = "asr") -> None:
        super().__init__()
        self.current = current  # stage -> (workers, batch size or None)
        self.stage = stage

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="tune"):
            yield Static("Tune a stage", classes="title")
            yield Select(
                [(s, s) for s in STAGES], value=self.stage, allow_blank=False, id="stage", compact=True
            )
            with Grid(classes="form"):
                yield Label(f"workers (1-{MAX_WORKERS})")
                yield Input(id="workers", type="integer", validators=[Integer(1, MAX_WORKERS)], compact=True)
                yield Label(f"batch size (1-{MAX_BATCH_SIZE})")
                yield Input(id="batch", type="integer", validators=[Integer(1, MAX_BATCH_SIZE)], compact=True)
            yield Static("", id="tune-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply", id="apply", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self._fill(self.stage)

    def _fill(self, stage: str) -> None:
        workers, batch = self.current.get(stage, (1, None))
        self.query_one("#workers", Input).value = str(workers)
        batch_input = self.query_one("#batch", Input)
        batch_input.value = str(batch) if batch is not None else ""
        batch_input.disabled = stage not in BATCHED_STAGES
        batch_input.placeholder = "" if stage in BATCHED_STAGES else "does not batch"

    @on(Select.Changed, "#stage")
    def _stage_changed(self, event: Select.Changed) -> None:
        self.stage = str(event.value)
        self._fill(self.stage)

    @on(Button.Pressed, "#apply")
    @on(Input.Submitted)
    def _apply(self) -> None:
        error = self.query_one("#tune-error", Static)
        workers_input = self.query_one("#workers", Input)
        result = workers_input.validate(workers_input.value)
        if result is not None and not result.is_valid:
            error.update(f"workers: {'; '.join(result.failure_descriptions)}; nothing applied")
            return
        batch: int | None = None
        if self.stage in BATCHED_STAGES:
            batch_input = self.query_one("#batch", Input)
            result = batch_input.validate(batch_input.value)
            if result is not None and not result.is_valid:
                error.update(f"batch size: {'; '.join(result.failure_descriptions)}; nothing applied")
                return
            batch = int(batch_input.value)
        self.dismiss((self.stage, int(workers_input.value), batch))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ThresholdScreen(ModalScreen[float | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, current: float) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="threshold"):
            yield Static("Fast-path threshold", classes="title")
            yield Static(
                "A file whose voice windows are all at least this similar (cosine, 0..1) is taken "
                "as a monologue and skips diarization.",
                classes="hint",
            )
            yield Input(value=f"{self.current:.3f}", id="value", validators=[Number(0.0, 1.0)], compact=True)
            yield Static("", id="threshold-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply", id="apply", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Button.Pressed, "#apply")
    @on(Input.Submitted)
    def _apply(self) -> None:
        field = self.query_one("#value", Input)
        result = field.validate(field.value)
        if result is not None and not result.is_valid:
            self.query_one("#threshold-error", Static).update(
                f"{'; '.join(result.failure_descriptions)}; nothing applied"
            )
            return
        self.dismiss(float(field.value))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class PathSuggester(Suggester):
    """Completes the last path component from what is on disk (directories get a trailing /)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        typed = Path(value).expanduser()
        folder, prefix = (typed, "") if value.endswith("/") else (typed.parent, typed.name)
        try:
            entries = sorted(folder.iterdir(), key=lambda p: p.name)
        except OSError:
            return None
        for entry in entries:
            if entry.name.startswith(prefix) and entry.name != prefix and not entry.name.startswith("."):
                completed = value[: len(value) - len(prefix)] + entry.name
                return completed + ("/" if entry.is_dir() else "")
        return None


class AddPathScreen(ModalScreen[tuple[str, str | None, dict[str, int]] | None]):
    """A path (tab or → completes), an optional batch name and what is known of the speakers.
    Returns (path, name, batch options)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="add-path"):
            yield Static("Add a file or folder as a new batch", classes="title")
            yield Input(placeholder="path (→ completes)", id="path", suggester=PathSuggester(), compact=True)
            yield Input(placeholder="batch name (optional)", id="name", compact=True)
            yield Input(placeholder="speakers: 2, 2-4, or empty to estimate", id="speakers", compact=True)
            yield Static("", id="path-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Add", id="add", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Button.Pressed, "#add")
    @on(Input.Submitted)
    def _add(self) -> None:
        raw = self.query_one("#path", Input).value.strip()
        if not raw:
            self.query_one("#path-error", Static).update("give a path")
            return
        path = Path(raw).expanduser()
        if not path.exists():
            self.query_one("#path-error", Static).update(f"{path} does not exist")
            return
        name = self.query_one("#name", Input).value.strip() or None
        try:
            speakers = SpeakerOptions.parse(self.query_one("#speakers", Input).value)
        except ValueError as exc:
            self.query_one("#path-error", Static).update(str(exc))
            return
        self.dismiss((str(path), name, speakers.as_options()))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class QuitScreen(ModalScreen[str | None]):
    """Files are in flight: finish them, re-queue them for later (or another node), or stay."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "choose('finish')", "finish"),
        Binding("r", "choose('requeue')", "re-queue"),
        Binding("escape,c", "choose('cancel')", "cancel"),
    ]

    def __init__(self, in_flight: int) -> None:
        super().__init__()
        self.in_flight = in_flight

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="quit"):
            yield Static(f"{self.in_flight} file(s) in flight. Quit how?", classes="title")
            yield Static(
                "finish: wait until they are stored · re-queue: give them back to the queue now",
                classes="hint",
            )
            with Horizontal(classes="buttons"):
                yield Button("Finish them \\[f]", id="finish", variant="primary", compact=True)
                yield Button("Re-queue them \\[r]", id="requeue", variant="warning", compact=True)
                yield Button("Cancel \\[esc]", id="cancel", compact=True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(None if choice == "cancel" else choice)
