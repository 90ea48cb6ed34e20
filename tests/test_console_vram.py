"""The console shows the engine's VRAM against GPU_MEMORY_BUDGET where it shows VRAM, and says on
CPU that no budget applies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from console_states import FrozenBackend, gpu_history, state, vram
from textual.widgets import Label

from voxdock.engine.vram import GIB, VramSnapshot
from voxdock.formatting import vram_label
from voxdock.tui.app import VoxdockConsole
from voxdock.tui.backend import ConsoleData
from voxdock.tui.widgets import Quiet

T = TypeVar("T")


def test_the_label_is_use_against_budget_on_the_budgets_device() -> None:
    gpu = gpu_history()[0][-1]
    assert vram_label(gpu, vram()) == "VRAM 31.4/71.7G budget"
    over = replace(vram(), used_bytes=int(72.5 * GIB))
    assert vram_label(gpu, over) == "VRAM 72.5/71.7G OVER"
    # another device, no budget (CPU engine on a GPU host), or not known yet: the device's own use
    assert vram_label(replace(gpu, index=1), vram()) == "VRAM 31.4G/79.6G"
    assert vram_label(gpu, VramSnapshot("default", None, None, None)) == "VRAM 31.4G/79.6G"
    assert vram_label(gpu, None) == "VRAM 31.4G/79.6G"


async def on_screen(data: ConsoleData, tmp_path: Path, look: Callable[[VoxdockConsole], T]) -> T:
    """`look` at the console once it shows `data`."""
    app = VoxdockConsole(
        FrozenBackend(data), refresh_s=60.0, prefs_path=tmp_path / "p.json", show_clock=False
    )
    async with app.run_test(size=(140, 40)) as pilot:
        for _ in range(100):
            if app.applied_at is not None:
                break
            await pilot.pause(0.05)
        await pilot.pause()
        return look(app)


async def shown(data: ConsoleData, tmp_path: Path, selector: str) -> str:
    def text(app: VoxdockConsole) -> str:
        widget = app.query_one(selector)
        assert isinstance(widget, Label | Quiet)
        return str(widget.render())

    return await on_screen(data, tmp_path, text)


async def test_the_dashboard_shows_the_budget(tmp_path: Path) -> None:
    assert await shown(state("gpu"), tmp_path, "#gpu-0 .gpu-mem-label") == "VRAM 31.4/71.7G budget"


async def test_on_cpu_no_budget_is_shown_as_such(tmp_path: Path) -> None:
    base = state("running-no-gpu")
    cpu = replace(base, snapshot=replace(base.snapshot, vram=VramSnapshot("default", None, None, None)))
    assert await shown(cpu, tmp_path, "#gpu-none") == "no GPU: running on CPU, no VRAM budget"


async def test_a_mig_slice_shows_its_vram_and_says_utilisation_is_not_reported(tmp_path: Path) -> None:
    """NVML gives a MIG slice's memory but not its utilisation: the row stays, "n/a" where the
    percentage would be (it used to drop the device and say "no GPU")."""
    base = state("gpu")
    history = {0: [replace(g, utilization_pct=None) for g in base.gpu_history[0]]}
    mig = replace(base, snapshot=replace(base.snapshot, gpus=[history[0][-1]]), gpu_history=history)
    assert await shown(mig, tmp_path, "#gpu-0 .gpu-label") == "GPU0 n/a"
    assert await shown(mig, tmp_path, "#gpu-0 .gpu-mem-label") == "VRAM 31.4/71.7G budget"
    assert not await util_line_shown(mig, tmp_path)  # not a flat line that reads as 0% busy
    assert await util_line_shown(base, tmp_path)


async def util_line_shown(data: ConsoleData, tmp_path: Path) -> bool:
    return await on_screen(data, tmp_path, lambda app: bool(app.query_one("#gpu-0 .gpu-util").display))
