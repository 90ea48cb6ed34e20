"""tui/widgets.py repaints one changed cell by writing two private DataTable attributes (`_data`,
`_update_count`); without them it falls back to update_cell, which repaints the whole table every
second down an SSH link. This fails loudly when a Textual release drops or renames them."""

from __future__ import annotations

from pathlib import Path

from console_states import FrozenBackend, snapshot, state
from rich.text import Text
from textual.widgets import DataTable

from voxdock.tui.app import VoxdockConsole
from voxdock.tui.widgets import StageTable


def test_datatable_still_has_the_private_attributes() -> None:
    table = DataTable()
    assert isinstance(getattr(table, "_data", None), dict)
    assert isinstance(getattr(table, "_update_count", None), int)


async def test_a_changed_rtf_repaints_its_cell_without_update_cell(tmp_path: Path) -> None:
    app = VoxdockConsole(
        FrozenBackend(state("running-no-gpu")), refresh_s=60.0, prefs_path=tmp_path / "p.json"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            if app.applied_at is not None:
                break
            await pilot.pause(0.05)
        table = app.query_one(StageTable)
        whole: list[object] = []
        original = table.update_cell
        table.update_cell = lambda *a, **k: (whole.append(a), original(*a, **k))  # type: ignore[method-assign]
        before = table._update_count
        changed = snapshot()
        stages = [
            s if s.name != "asr" else type(s)(**{**s.__dict__, "items": s.items + 1}) for s in changed.stages
        ]
        table.show(type(changed)(**{**changed.__dict__, "stages": stages}))
        await pilot.pause()
        assert whole == [], "fell back to update_cell: the private attributes are gone"
        assert table._update_count > before
        row = [str(c) if not isinstance(c, Text) else c.plain for c in table.get_row("asr")]
        assert str(next(s.items for s in stages if s.name == "asr")) in row
