"""End to end: `voxdock console` in a real terminal under tmux, driven by keys, read from the screen."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MEDIA

pytestmark = [pytest.mark.slow, pytest.mark.tmux, pytest.mark.models]

VOXDOCK = str(Path(sys.executable).parent / "voxdock")


class Terminal:
    def __init__(self, session: str) -> None:
        self.session = session

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True, text=True, check=False
        ).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.session, *keys], check=True)

    def wait_for(self, pattern: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{pattern!r} never appeared; the screen was:\n{screen}")

    def alive(self) -> bool:
        return (
            subprocess.run(["tmux", "has-session", "-t", self.session], capture_output=True).returncode == 0
        )


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    assert shutil.which("tmux"), "tmux is required (scripts/setup --test installs it)"
    session = f"voxdock-{uuid.uuid4().hex[:8]}"
    media = tmp_path / "media"
    media.mkdir()
    for name in ("monologue.ogg", "dialogue_2spk.wav"):
        shutil.copy(MEDIA / name, media / name)
    env = {
        "VOXDOCK_DATA_DIR": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HF_HUB_OFFLINE": "1",
        "TERM": "xterm-256color",
    }
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    done_marker = tmp_path / "exit-code"
    command = f"env {exports} {VOXDOCK} console {media} --refresh 0.5; echo $? > {done_marker}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command],
        check=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    term = Terminal(session)
    term.done_marker = done_marker  # type: ignore[attr-defined]
    yield term
    if term.alive():
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_console_in_a_real_terminal(terminal: Terminal) -> None:
    screen = terminal.wait_for(r"running · CPU", timeout=180)
    assert "stages" in screen and "asr" in screen
    terminal.wait_for(r"no GPU", timeout=30)
    # Raise ASR workers from the keyboard and watch the stage table take it.
    terminal.keys("+")
    terminal.wait_for(r"asr\s+\S+\s+\S+\s+\d+\s+\d+/3\b", timeout=10)
    # The batch of the two given files finishes; both are done.
    terminal.wait_for(r"batch-\S+\s+done\s+█+\s*100%\s+2\s+0\b", timeout=240)
    terminal.keys("l")  # files of the batch
    terminal.wait_for(r"monologue\.ogg\s+done", timeout=10)
    terminal.keys("q")
    deadline = time.monotonic() + 60
    marker: Path = terminal.done_marker  # type: ignore[attr-defined]
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert marker.exists(), f"the console did not exit; screen:\n{terminal.screen()}"
    assert marker.read_text().strip() == "0"
