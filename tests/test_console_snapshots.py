"""Snapshot tests of the console's screens in fixed states (pytest-textual-snapshot).

The states are real engine/store data classes with fixed values (tests/console_states.py); the
pilot tests in test_console.py drive the console over a live engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from console_states import FrozenBackend, state
from textual.pilot import Pilot
from textual.widgets import Input

from voxdock.tui.app import VoxdockConsole


def console(name: str, tmp_path: Path) -> VoxdockConsole:
    return VoxdockConsole(
        FrozenBackend(state(name)), refresh_s=60.0, prefs_path=tmp_path / "prefs.json", show_clock=False
    )


async def settled(pilot: Pilot, *keys: str) -> None:
    app = pilot.app
    assert isinstance(app, VoxdockConsole)
    for _ in range(100):
        if app.applied_at is not None:
            break
        await pilot.pause(0.05)
    assert app.applied_at is not None, "the first snapshot never reached the screen"
    if keys:
        await pilot.press(*keys)
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()


@pytest.mark.parametrize(
    ("name", "size", "keys"),
    [
        ("running-no-gpu", (100, 30), ()),
        ("running-no-gpu", (120, 40), ()),
        ("running-no-gpu", (80, 24), ()),
        ("paused", (100, 30), ()),
        ("failed-file", (100, 30), ("l",)),
        ("gpu", (140, 40), ()),
        ("gpu", (120, 40), ()),
    ],
    ids=[
        "running-100x30",
        "running-120x40",
        "running-80x24",
        "paused",
        "failed-file",
        "gpu-140x40",
        "gpu-120x40",
    ],
)
def test_dashboard(
    snap_compare, tmp_path: Path, name: str, size: tuple[int, int], keys: tuple[str, ...]
) -> None:
    async def before(pilot: Pilot) -> None:
        await settled(pilot, *keys)

    assert snap_compare(console(name, tmp_path), terminal_size=size, run_before=before)


def test_help_screen(snap_compare, tmp_path: Path) -> None:
    async def before(pilot: Pilot) -> None:
        await settled(pilot, "question_mark")

    assert snap_compare(console("running-no-gpu", tmp_path), terminal_size=(100, 30), run_before=before)


def test_tune_dialog_fits_80x24(snap_compare, tmp_path: Path) -> None:
    async def before(pilot: Pilot) -> None:
        await settled(pilot, "w")

    assert snap_compare(console("running-no-gpu", tmp_path), terminal_size=(80, 24), run_before=before)


def test_add_dialog_with_a_bad_speaker_entry_fits_80x24(snap_compare, tmp_path: Path) -> None:
    async def before(pilot: Pilot) -> None:
        await settled(pilot, "a")
        pilot.app.screen.query_one("#path", Input).value = "/tmp"  # the same on every machine
        pilot.app.screen.query_one("#speakers", Input).value = "2 to 4"
        pilot.app.screen.query_one("#speakers", Input).focus()
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(console("running-no-gpu", tmp_path), terminal_size=(80, 24), run_before=before)


@pytest.mark.parametrize(
    ("start", "end"),
    [((120, 40), (80, 24)), ((80, 24), (120, 40))],
    ids=["to-80x24", "to-120x40"],
)
def test_the_layout_follows_a_resize(
    snap_compare, tmp_path: Path, start: tuple[int, int], end: tuple[int, int]
) -> None:
    """After a resize the console looks as if it had started at the new size (it kept the old
    layout, and at 80 columns showed only the stage and RTF columns)."""

    async def before(pilot: Pilot) -> None:
        await settled(pilot)
        await pilot.resize_terminal(*end)
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()

    assert snap_compare(console("gpu", tmp_path), terminal_size=start, run_before=before)


@pytest.mark.parametrize("key", ["f", "q"], ids=["threshold", "quit"])
def test_dialogs_wrap_their_text_at_80x24(snap_compare, tmp_path: Path, key: str) -> None:
    async def before(pilot: Pilot) -> None:
        await settled(pilot, key)

    assert snap_compare(console("running-no-gpu", tmp_path), terminal_size=(80, 24), run_before=before)
