"""One description per console command: the bindings, the palette, the help screen and the README's
key table all come from tui/commands.py, and every command has an action that exists."""

from __future__ import annotations

from pathlib import Path

from console_states import FrozenBackend, state

from voxdock.tui.app import VoxdockConsole
from voxdock.tui.commands import COMMANDS, key_table
from voxdock.tui.screens import HELP

ROOT = Path(__file__).resolve().parents[1]


def test_readme_and_help_show_the_command_table() -> None:
    table = key_table()
    assert table in (ROOT / "README.md").read_text()
    assert table in HELP
    assert "`b` `l` `n` `o`" not in HELP  # the old, wrong list of view keys


def test_every_command_is_bound_to_an_action_that_exists(tmp_path: Path) -> None:
    app = VoxdockConsole(FrozenBackend(state("running-no-gpu")), prefs_path=tmp_path / "p.json")
    bound = {b.action for b in app.BINDINGS if not isinstance(b, tuple | str)}  # type: ignore[union-attr]
    for command in COMMANDS:
        assert command.builtin or command.action in bound
        name = command.action.split("(")[0]
        assert hasattr(app, f"action_{name}"), f"no action for {command.key_display}"
    keys = [k for c in COMMANDS for k in c.keys.split(",")]
    assert len(keys) == len(set(keys)), "a key bound twice"


async def test_cancel_retry_and_release_reach_the_backend(tmp_path: Path) -> None:
    backend = FrozenBackend(state("running-no-gpu"))
    app = VoxdockConsole(backend, refresh_s=60.0, prefs_path=tmp_path / "p.json", show_clock=False)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            if app.applied_at is not None:
                break
            await pilot.pause(0.05)
        await pilot.press("x", "e", "u")
        for _ in range(50):
            if len(backend.calls) >= 3:
                break
            await pilot.pause(0.05)
    assert ("cancel", 3) in backend.calls and ("retry", 3) in backend.calls
    assert ("release", "decode") in backend.calls


async def test_readonly_refuses_cancel(tmp_path: Path) -> None:
    backend = FrozenBackend(state("running-no-gpu"))
    app = VoxdockConsole(
        backend, refresh_s=60.0, readonly=True, prefs_path=tmp_path / "p.json", show_clock=False
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("x", "e", "u", "p")
        await pilot.pause(0.3)
    assert backend.calls == []
