"""Take the console screenshots in docs/ from a real run over the bundled examples.

    .venv/bin/python scripts/screenshots.py

Starts an engine on a throw-away embedded store, opens the console on `examples/`, and saves SVG
screenshots of the main screens while it works: the dashboard, the files of a batch (with a failed
file), the log, the tuning dialog and the help screen, at 100x30 and at 80x24.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from textual.pilot import Pilot

from voxdock.cli import model_plan
from voxdock.engine.engine import Engine
from voxdock.engine.models import vector_spec
from voxdock.settings import load_settings
from voxdock.storage.database import Database
from voxdock.storage.migrate import migrate
from voxdock.tui.app import VoxdockConsole
from voxdock.tui.backend import EngineBackend

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


async def wait(pilot: Pilot, condition, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await pilot.pause(0.2)


async def shoot(engine: Engine, tmp: Path, size: tuple[int, int], suffix: str) -> None:
    app = VoxdockConsole(
        EngineBackend(engine), refresh_s=0.5, prefs_path=tmp / "prefs.json", show_clock=False
    )
    async with app.run_test(size=size) as pilot:
        await wait(pilot, lambda: app.data is not None and app.data.snapshot.totals.files_done >= 2)
        await pilot.pause(1.0)
        app.save_screenshot(str(DOCS / f"console-dashboard{suffix}.svg"))
        await pilot.press("l")
        await pilot.pause(0.6)
        app.save_screenshot(str(DOCS / f"console-files{suffix}.svg"))
        await pilot.press("g")
        await pilot.pause(0.6)
        app.save_screenshot(str(DOCS / f"console-log{suffix}.svg"))
        await pilot.press("b", "w")
        await pilot.pause(0.6)
        app.save_screenshot(str(DOCS / f"console-tune{suffix}.svg"))
        await pilot.press("escape", "question_mark")
        await pilot.pause(0.6)
        app.save_screenshot(str(DOCS / f"console-help{suffix}.svg"))
        await pilot.press("escape")


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="voxdock-shots-") as name:
        tmp = Path(name)
        inputs = tmp / "archive"
        shutil.copytree(ROOT / "examples", inputs)
        (inputs / "broken.wav").write_bytes((ROOT / "examples" / "meeting_2spk.wav").read_bytes()[:40000])
        settings = load_settings(_env_file=None, voxdock_data_dir=tmp / "data")
        plan = model_plan(settings)
        db = Database.open(None, tmp / "data")
        migrate(db, vector_spec(plan))
        for size, suffix in (((100, 30), ""), ((80, 24), "-80x24")):
            engine = Engine(settings, db, plan)
            engine.submit([inputs], batch_name=f"examples{suffix or '-100x30'}", skip_existing=False)
            engine.start(wait=True)
            asyncio.run(shoot(engine, tmp, size, suffix))
            engine.stop(mode="finish")
        db.close()
    print(f"screenshots written to {DOCS}")


if __name__ == "__main__":
    main()
