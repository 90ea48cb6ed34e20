"""Pilot tests: the console over a live engine (real models, real embedded store)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import MEDIA
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static

from voxdock.engine.engine import Engine
from voxdock.storage import jobs
from voxdock.storage.database import Database
from voxdock.tui.app import CONTROL_ACTIONS, VoxdockConsole
from voxdock.tui.backend import EngineBackend
from voxdock.tui.screens import QuitScreen, TuneScreen
from voxdock.tui.widgets import StageTable

pytestmark = [pytest.mark.models, pytest.mark.slow]


async def until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.05)


def console_for(engine: Engine, tmp_path: Path, **kw: object) -> VoxdockConsole:
    return VoxdockConsole(
        EngineBackend(engine), refresh_s=0.2, prefs_path=tmp_path / "prefs.json", show_clock=False, **kw
    )  # type: ignore[arg-type]


def media_copies(tmp_path: Path, n: int, name: str = "monologue.ogg") -> list[Path]:
    out = []
    for i in range(n):
        target = tmp_path / f"in-{i}{Path(name).suffix}"
        shutil.copy(MEDIA / name, target)
        with target.open("ab") as handle:
            handle.write(bytes([i]))  # distinct content: none is skipped as already stored
        out.append(target)
    return out


async def run(
    app: VoxdockConsole, body: Callable[[Pilot], Awaitable[None]], size: tuple[int, int] = (100, 30)
) -> None:
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.data is not None and bool(app.data.snapshot.stages), what="first data")
        await body(pilot)


def test_pause_and_resume_reach_the_engine_and_the_database(
    make_engine: Callable[..., Engine], db: Database, tmp_path: Path
) -> None:
    # One file's audio at a time, so files are still queued when "p" lands: a batch whose files have
    # all finished is done, and a done batch cannot be paused.
    engine = make_engine(in_flight_audio_gb=1e-6)
    submission = engine.submit(media_copies(tmp_path, 3))
    engine.pause(submission.batch_id)  # nothing gets processed while the test looks
    engine.resume(submission.batch_id)
    engine.pause(submission.batch_id)
    engine.start(wait=True)
    app = console_for(engine, tmp_path)

    async def body(pilot: Pilot) -> None:
        await until(pilot, lambda: app.selected_batch == submission.batch_id, what="batch selected")
        await pilot.press("r")
        await until(
            pilot, lambda: jobs.batch_state(db, submission.batch_id) == "running", what="resumed in db"
        )
        await pilot.press("p")
        await until(pilot, lambda: jobs.batch_state(db, submission.batch_id) == "paused", what="paused in db")
        assert any("paused" in e.message for e in engine.events.recent())
        await until(
            pilot, lambda: any(b.state == "paused" for b in app.data.batches), what="paused on screen"
        )

    asyncio.run(run(app, body))


def test_worker_and_batch_size_changes_reach_the_engine(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    engine = make_engine(asr_workers=2)
    engine.start(wait=True)
    app = console_for(engine, tmp_path)

    async def body(pilot: Pilot) -> None:
        await pilot.press("plus")
        await until(pilot, lambda: engine.stages["asr"].workers == 3, what="asr workers 3")
        await until(pilot, lambda: app.data.snapshot.stage("asr").workers == 3, what="stage table shows 3")
        await pilot.press("minus", "minus")
        await until(pilot, lambda: engine.stages["asr"].workers == 1, what="asr workers 1")

        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, TuneScreen), what="tune dialog")
        app.screen.query_one("#stage", Select).value = "text"
        await pilot.pause()
        workers = app.screen.query_one("#workers", Input)
        batch = app.screen.query_one("#batch", Input)
        workers.value, batch.value = "2", "16"
        await pilot.click("#apply")
        await until(pilot, lambda: engine.adaptive_batches["text"].configured == 16, what="text batch 16")
        await until(pilot, lambda: engine.stages["text"].workers == 2, what="text workers 2")
        await until(pilot, lambda: app.data.snapshot.stage("text").batch_size == 16, what="table shows 16")

    asyncio.run(run(app, body))


def test_an_invalid_value_is_refused_and_nothing_is_applied(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    engine = make_engine(asr_workers=2, voice_enrollment_batch_size=32)
    engine.start(wait=True)
    app = console_for(engine, tmp_path)

    async def body(pilot: Pilot) -> None:
        for workers, batch in (("0", "32"), ("65", "32"), ("2", "0"), ("2", "99999"), ("", "8")):
            await pilot.press("w")
            await until(pilot, lambda: isinstance(app.screen, TuneScreen), what="tune dialog")
            app.screen.query_one("#stage", Select).value = "voice"
            await pilot.pause()
            app.screen.query_one("#workers", Input).value = workers
            app.screen.query_one("#batch", Input).value = batch
            await pilot.click("#apply")
            await pilot.pause(0.2)
            assert isinstance(app.screen, TuneScreen), f"{workers}/{batch} was accepted"
            error = str(app.screen.query_one("#tune-error").render())
            assert "nothing applied" in error
            await pilot.press("escape")
        assert engine.stages["voice"].workers == 1
        assert engine.adaptive_batches["voice"].configured == 32

        await pilot.press("f")  # the threshold dialog refuses values outside 0..1 the same way
        field = app.screen.query_one("#value", Input)
        field.value = "1.7"
        await pilot.click("#apply")
        await pilot.pause(0.2)
        assert "nothing applied" in str(app.screen.query_one("#threshold-error").render())
        assert engine.tunables.fast_path_threshold <= 1.0

    asyncio.run(run(app, body))


def test_readonly_has_no_controls(make_engine: Callable[..., Engine], db: Database, tmp_path: Path) -> None:
    engine = make_engine(asr_workers=2)
    submission = engine.submit(media_copies(tmp_path, 1))
    engine.pause(submission.batch_id)
    engine.start(wait=True)
    app = console_for(engine, tmp_path, readonly=True)

    async def body(pilot: Pilot) -> None:
        shown = {
            binding.action
            for binding in (b.binding for b in app.active_bindings.values())
            if app.check_action(binding.action, ()) is not False
        }
        assert not shown & CONTROL_ACTIONS
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert "Pause batch" not in titles and "Tune a stage" not in titles and "Add path" not in titles
        assert "Help" in titles
        base = app.screen
        for key in ("r", "p", "plus", "minus", "w", "f", "a"):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert app.screen is base, f"{key} opened a dialog in read-only mode"
        assert jobs.batch_state(db, submission.batch_id) == "paused"
        assert engine.stages["asr"].workers == 2
        assert "read-only" in app.sub_title

    asyncio.run(run(app, body))


@pytest.mark.parametrize("choice", ["requeue", "finish"])
def test_quit_with_files_in_flight_does_what_was_chosen(
    make_engine: Callable[..., Engine], db: Database, tmp_path: Path, choice: str
) -> None:
    engine = make_engine(asr_workers=1)
    submission = engine.submit(media_copies(tmp_path, 4, "dialogue_3spk.flac"))
    engine.start(wait=True)
    app = console_for(engine, tmp_path)
    held: list[int] = []

    async def body(pilot: Pilot) -> None:
        await until(pilot, lambda: app.data.snapshot.totals.files_in_flight > 0, what="a file in flight")
        held.append(engine.files_in_flight())
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="quit dialog")
        await pilot.press("r" if choice == "requeue" else "f")
        await until(pilot, lambda: not app.is_running, timeout=180, what="console exit")

    asyncio.run(run(app, body))
    assert engine.state == "stopped"
    progress = jobs.batch_progress(db, [submission.batch_id])[0]
    assert progress.claimed == 0
    if choice == "requeue":
        assert progress.queued >= held[0]  # what was in flight went back to the queue
        assert progress.done < 4
    else:
        assert progress.done >= held[0]  # what was in flight was finished and stored
        assert progress.queued == 4 - progress.done - progress.failed


def test_add_a_path_from_the_console_and_see_it_start(
    make_engine: Callable[..., Engine], db: Database, tmp_path: Path
) -> None:
    engine = make_engine()
    engine.start(wait=True)
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(MEDIA / "monologue_video.mp4", folder / "clip.mp4")
    app = console_for(engine, tmp_path)

    async def body(pilot: Pilot) -> None:
        await pilot.press("a")
        path_input = app.screen.query_one("#path", Input)
        path_input.value = str(tmp_path / "dr")  # the suggester completes the folder name
        await until(pilot, lambda: path_input._suggestion == str(folder) + "/", what="path completion")
        await pilot.press("right")
        assert path_input.value == str(folder) + "/"
        app.screen.query_one("#name", Input).value = "dropped"
        speakers = app.screen.query_one("#speakers", Input)
        speakers.value = "two"
        await pilot.click("#add")
        error = app.screen.query_one("#path-error", Static)
        assert "'two' is not a count (2) or a range (2-4)" in str(error.render())
        speakers.value = "1"  # one voice: the operator knows it, so no diarization
        speakers.focus()
        await pilot.press("enter")
        await until(pilot, lambda: any(b.name == "dropped" for b in app.data.batches), what="new batch shown")
        await until(
            pilot,
            lambda: any(b.name == "dropped" and b.done == 1 for b in app.data.batches),
            timeout=120,
            what="its file done",
        )

    asyncio.run(run(app, body))
    (batch,) = [b for b in jobs.batch_progress(db) if b.name == "dropped"]
    assert batch.done == 1 and batch.options == {"num_speakers": 1}


def test_data_arriving_while_the_console_closes_is_dropped(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    """A refresh that ends while the console is closing finds its widgets gone: it must be dropped,
    not crash the console on its way out (seen when both cores were busy)."""
    engine = make_engine()
    engine.start(wait=True)
    console = console_for(engine, tmp_path)

    async def close_then_deliver(pilot: Pilot) -> None:
        data = console.data
        await console.query_one(StageTable).remove()
        console._apply(data, [])  # what the gather worker's call_from_thread runs
        await pilot.pause()
        assert console.data is data

    asyncio.run(run(console, close_then_deliver))


def test_theme_switch_is_remembered(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = make_engine()
    engine.start(wait=True)
    first = console_for(engine, tmp_path)
    chosen: list[str] = []

    async def switch(pilot: Pilot) -> None:
        assert first.theme == "voxdock-night"
        await pilot.press("ctrl+t")
        await pilot.pause()
        chosen.append(first.theme)
        assert first.theme != "voxdock-night"

    asyncio.run(run(first, switch))
    second = console_for(engine, tmp_path)

    async def check(pilot: Pilot) -> None:
        assert second.theme == chosen[0]

    asyncio.run(run(second, check))
