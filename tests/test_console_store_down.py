"""What the console says while the engine cannot reach the database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from console_states import FrozenBackend, state

from voxdock.tui.app import VoxdockConsole
from voxdock.tui.widgets import Totals


async def shown_totals(data_name: str, tmp_path: Path, *, engine_knows: bool = True) -> str:
    data = state(data_name)
    if not engine_knows:
        data = replace(data, snapshot=replace(data.snapshot, store_problem=None))
    app = VoxdockConsole(
        FrozenBackend(data), refresh_s=60.0, prefs_path=tmp_path / "p.json", show_clock=False
    )
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            if app.applied_at is not None:
                break
            await pilot.pause(0.05)
        return str(app.query_one(Totals).render())


async def test_the_engine_s_own_word_on_the_outage_is_shown(tmp_path: Path) -> None:
    text = await shown_totals("store-down", tmp_path)
    assert "database unavailable since 12:00:01, retrying, attempt 4: connection refused" in text


async def test_a_failed_read_says_the_database_is_unavailable(tmp_path: Path) -> None:
    text = await shown_totals("store-down", tmp_path, engine_knows=False)
    assert "database unavailable, retrying: PoolTimeout" in text


async def test_nothing_is_said_while_the_store_answers(tmp_path: Path) -> None:
    assert "database unavailable" not in await shown_totals("running-no-gpu", tmp_path)
