"""`voxdock ingest` as an operator runs it: progress, summary, exit codes, re-runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MEDIA

pytestmark = [pytest.mark.slow, pytest.mark.models]


def voxdock(
    data: Path, *args: str, columns: str = "160", timeout: int = 180
) -> subprocess.CompletedProcess[str]:
    """`voxdock ARGS` as an operator runs it, on the embedded store under `data`."""
    env = {**os.environ, "VOXDOCK_DATA_DIR": str(data), "COLUMNS": columns, "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "voxdock", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def ingest(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return voxdock(data, "ingest", *args, timeout=600)


def test_ingest_summary_exit_codes_and_reruns(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(MEDIA / "monologue_video.mp4", inbox / "talk.mp4")
    (inbox / "notes.wav").write_text("not audio at all\n")
    data = tmp_path / "data"

    first = ingest(data, str(inbox), "--batch", "first")
    assert first.returncode == 1, first.stdout + first.stderr  # one file failed
    out = first.stdout
    assert "batch first: 2 file(s) to process" in out
    assert "per-stage real-time factor" in out and "asr" in out
    assert "1 done, 1 failed, 0 skipped" in out
    assert "notes.wav" in out and "not an audio or video file" in out
    assert "Traceback" not in first.stderr

    again = ingest(data, str(inbox / "talk.mp4"), "--batch", "again")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 file(s) to process, 1 already stored" in again.stdout
    assert "0 done, 0 failed, 1 skipped" in again.stdout

    forced = ingest(data, str(inbox / "talk.mp4"), "--no-skip-existing", "--speakers", "1", "-q")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "1 done, 0 failed, 0 skipped" in forced.stdout
    # -q: the summary alone, no progress bar or line before it.
    assert "file(s) to process" not in forced.stdout and "loading models" not in forced.stdout
    assert "h/h" not in forced.stdout and "1/1" not in forced.stdout, forced.stdout
    assert forced.stdout.lstrip().startswith("per-stage real-time factor"), forced.stdout

    status = voxdock(data, "db", "status", timeout=120)
    assert status.returncode == 0
    assert "batches 3" in " ".join(status.stdout.split())

    found = voxdock(data, "search", "will it rain, should I take an umbrella", "-n", "1", columns="200")
    assert found.returncode == 0, found.stderr
    assert "talk.mp4" in found.stdout and "umbrella" in found.stdout.lower()

    table = voxdock(data, "turns", str(inbox / "talk.mp4"), timeout=120)
    assert table.returncode == 0, table.stderr
    assert "1 speaker(s)" in table.stdout and "SPEAKER_00" in table.stdout
    assert "how found: one speaker given" in table.stdout  # the last run was told one speaker
    rttm = voxdock(data, "turns", "talk", "--rttm", timeout=120)
    assert rttm.returncode == 0, rttm.stderr
    lines = rttm.stdout.splitlines()
    assert lines and all(line.startswith("SPEAKER talk 1 ") and " SPEAKER_00 " in line for line in lines)
    folder = voxdock(data, "turns", str(inbox), timeout=120)
    assert folder.returncode == 0, folder.stderr
    assert "SPEAKER_00" in folder.stdout and "notes.wav: no turns (failed)" in folder.stdout
    missing = voxdock(data, "turns", "no-such-file", timeout=120)
    assert (
        missing.returncode == 1 and "no file stored with a path containing 'no-such-file'" in missing.stderr
    )


def test_ingest_with_nothing_to_do_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no media here\n")
    result = ingest(tmp_path / "data", str(empty))
    assert result.returncode == 1
    assert "no media files found" in result.stderr


def test_submit_then_pause_and_resume_a_batch_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    queued = voxdock(
        data, "submit", str(MEDIA / "monologue.ogg"), str(MEDIA / "silence.wav"), "--batch", "nightly"
    )
    assert queued.returncode == 0, queued.stderr
    assert "batch nightly: 2 file(s) queued" in queued.stdout
    interviews = voxdock(
        data, "submit", str(MEDIA / "dialogue_2spk.wav"), "--batch", "interviews", "--speakers", "2"
    )
    assert interviews.returncode == 0, interviews.stderr
    conflict = voxdock(
        data, "submit", str(MEDIA / "dialogue_2spk.wav"), "--min-speakers", "3", "--max-speakers", "2"
    )
    assert conflict.returncode == 2 and "--min-speakers is larger than --max-speakers" in conflict.stderr
    assert voxdock(data, "batch", "pause", "nightly").returncode == 0
    listing = " ".join(voxdock(data, "batch", "list").stdout.split())
    # files, done, failed, skipped, cancelled, left
    assert "nightly │ paused │ 2 │ 0 │ 0 │ 0 │ 0 │ 2 │ 00:00 │ auto" in listing
    assert "interviews │ running │ 1 │ 0 │ 0 │ 0 │ 0 │ 1 │ 00:00 │ 2" in listing
    assert voxdock(data, "batch", "resume", "nightly").returncode == 0
    assert "nightly │ running" in " ".join(voxdock(data, "batch", "list").stdout.split())
    missing = voxdock(data, "batch", "pause", "no-such-batch")
    assert missing.returncode == 2 and "no batch named 'no-such-batch'" in missing.stderr


def test_a_rerun_adopts_what_a_killed_ingest_left_and_does_each_file_once(tmp_path: Path) -> None:
    import re
    import signal
    import time

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("dialogue_2spk.wav", "monologue.ogg", "monologue_video.mp4"):
        shutil.copy(MEDIA / name, inbox / name)
    data = tmp_path / "data"
    env = {**os.environ, "VOXDOCK_DATA_DIR": str(data), "COLUMNS": "160", "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    killed = subprocess.Popen(
        [sys.executable, "-m", "voxdock", "ingest", str(inbox), "--batch", "killed"],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert killed.stdout is not None
    assert "batch killed: 3 file(s) to process" in killed.stdout.readline()
    time.sleep(3)
    killed.send_signal(signal.SIGKILL)  # no clean-up at all: its batch stays running, files queued
    killed.wait(timeout=30)

    rerun = ingest(data, str(inbox), "--batch", "rerun")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    out = " ".join(rerun.stdout.split())
    adopted = re.search(r"adopted (\d) unfinished file\(s\) of batch killed left by a stopped ingest", out)
    assert adopted is not None, out
    taken = int(adopted.group(1))
    assert taken >= 1
    done_before = 3 - taken  # what the killed ingest finished is stored, and not done again
    assert f"{taken} done, 0 failed, {done_before} skipped" in out, out
    listing = " ".join(voxdock(data, "batch", "list").stdout.split())
    # files, done, failed, skipped, cancelled, left: the old batch is closed, nothing left anywhere
    assert f"killed │ cancelled │ 3 │ {done_before} │ 0 │ 0 │ {taken} │ 0" in listing, listing
    assert f"rerun │ done │ 3 │ {taken} │ 0 │ {done_before} │ 0 │ 0" in listing, listing
    nodes = voxdock(data, "nodes")
    assert nodes.returncode == 0
    states = [line.split("│")[4].strip() for line in nodes.stdout.splitlines() if line.startswith("│")]
    assert sorted(states) == ["lost", "stopped"], nodes.stdout  # the killed one, the re-run
