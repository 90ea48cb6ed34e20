"""Every console command, described once: the key bindings, the footer, the command palette, the
help screen and the README's key table are all made from this list (a test holds the README to it).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Command:
    action: str  # the App action it runs, e.g. "pause" or "show_tab('files')"
    keys: str  # Textual key names, comma-separated
    key_display: str  # how the key is written on screen and in the docs
    label: str  # the footer's word
    title: str  # the palette's entry
    description: str  # what it does: help, palette and README
    control: bool = False  # changes the engine or the store: hidden and refused in --readonly
    footer: bool = True
    builtin: bool = False  # Textual binds it already: documented here, not bound again


COMMANDS: tuple[Command, ...] = (
    Command("quit_console", "q", "q", "quit", "Quit voxdock",
            "quit (asks whether to finish or re-queue the files in flight)"),
    Command("help", "question_mark", "?", "help", "Help", "keys, and what the columns mean"),
    Command("pause", "p", "p", "pause", "Pause batch",
            "pause the selected batch: no new file starts (files in flight finish)", control=True),
    Command("resume", "r", "r", "resume", "Resume batch", "let the selected batch run again", control=True),
    Command("cancel", "x", "x", "cancel", "Cancel batch",
            "cancel the selected batch: its queued files are not processed (files in flight finish)",
            control=True, footer=False),
    Command("retry", "e", "e", "retry", "Retry batch",
            "queue the selected batch's failed and cancelled files again", control=True, footer=False),
    Command("asr_more", "plus,equals_sign", "+", "+asr", "More ASR workers", "one more ASR worker",
            control=True),
    Command("asr_less", "minus", "-", "-asr", "Fewer ASR workers", "one ASR worker fewer", control=True),
    Command("tune", "w", "w", "tune", "Tune a stage",
            "set workers and batch size of any stage (validated; pinned: self-tuning leaves them)",
            control=True),
    Command("release", "u", "u", "release", "Release a stage",
            "hand the selected stage's workers and batch size back to self-tuning", control=True,
            footer=False),
    Command("threshold", "f", "f", "fast path", "Fast-path threshold",
            "set the monologue fast path's similarity threshold", control=True),
    Command("add_path", "a", "a", "add", "Add path",
            "add a file or folder as a new batch (→ completes paths)", control=True),
    Command("show_tab('batches')", "b", "b", "batches", "Show batches", "show the batches", footer=False),
    Command("show_tab('files')", "l", "l", "files", "Show files",
            "show the files of the selected batch, with the reason of each failure", footer=False),
    Command("show_tab('log')", "g", "g", "log", "Show log", "show the engine's log", footer=False),
    Command("show_tab('nodes')", "n", "n", "nodes", "Show nodes", "show every engine sharing this store",
            footer=False),
    Command("next_theme", "ctrl+t", "ctrl+t", "theme", "Next theme", "next theme (remembered)"),
    Command("command_palette", "ctrl+p", "ctrl+p", "palette", "Command palette",
            "the command palette: every command by name", footer=False, builtin=True),
)  # fmt: skip

CONTROL_ACTIONS = frozenset(c.action for c in COMMANDS if c.control)


def bindings() -> list[Binding]:
    return [
        # Textual writes ctrl keys its own way in the footer (^t); the docs spell them out.
        Binding(
            c.keys, c.action, c.label, show=c.footer, key_display=None if "ctrl+" in c.keys else c.key_display
        )
        for c in COMMANDS
        if not c.builtin
    ]


def key_table() -> str:
    """The markdown key table of the help screen and the README."""
    rows = ["| key | action |", "| --- | --- |"]
    rows += [f"| `{c.key_display}` | {c.description} |" for c in COMMANDS]
    return "\n".join(rows)
