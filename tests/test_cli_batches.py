"""`voxdock batch list | pause | resume | cancel | retry`, `voxdock nodes` and `voxdock submit` as an
operator runs them, on a store whose batches are set up directly: what each command says, its exit
status, and that the database agrees."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import MEDIA, one_line, run_voxdock

from voxdock import exit_codes
from voxdock.storage.database import Database
from voxdock.storage.jobs import (
    FileEntry,
    batch_jobs,
    batch_progress,
    claim_next,
    complete_job,
    create_batch,
    enqueue,
    fail_job,
    register_sources,
    set_batch_state,
)
from voxdock.storage.nodes import heartbeat, register_node


def voxdock(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "VOXDOCK_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
        "HF_HUB_OFFLINE": "1",
    }
    return run_voxdock(tmp_path, *args, env=env)


def listing(url: str, tmp_path: Path) -> dict[str, list[str]]:
    """`voxdock batch list` as {name: [state, files, done, failed, skipped, cancelled, left]}."""
    result = voxdock(url, tmp_path, "batch", "list")
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 9 and cells[1].isdigit():
            rows[cells[2]] = cells[3:10]
    return rows


def seed(db: Database) -> dict[str, int]:
    """Batches in every state: done, failed, paused, running (one file claimed), and queued only."""
    register_node(db, "n", "host", 1, "test")
    ids = {}
    for name, n in (("good", 2), ("bad", 2), ("held", 2), ("busy", 3)):
        ids[name] = create_batch(db, name)
        sources = [FileEntry(f"/{name}/{i}.wav", 10, f"{name}-{i}") for i in range(n)]
        enqueue(db, ids[name], register_sources(db, sources))
    for name in ("good", "bad"):
        for i in range(2):
            job = claim_next(db, "n", lease_seconds=60, max_attempts=3, only_batches=[ids[name]])
            assert job is not None
            if name == "bad" and i == 1:
                fail_job(db, job.job_id, job.source_id, "decode: not an audio or video file")
            else:
                complete_job(db, job.job_id, "n")
    set_batch_state(db, ids["held"], "paused")
    assert claim_next(db, "n", lease_seconds=60, max_attempts=3, only_batches=[ids["busy"]]) is not None
    heartbeat(db, "n", {}, state="stopped")  # the claim stays live (its lease), no engine runs now
    return ids


def test_batch_list_cancel_and_retry(empty_db_url: str, db: Database, tmp_path: Path) -> None:
    ids = seed(db)
    rows = listing(empty_db_url, tmp_path)
    assert rows == {
        "good": ["done", "2", "2", "0", "0", "0", "0"],
        "bad": ["failed", "2", "1", "1", "0", "0", "0"],
        "held": ["paused", "2", "0", "0", "0", "0", "2"],
        "busy": ["running", "3", "0", "0", "0", "0", "3"],
    }
    assert {b.name: b.state for b in batch_progress(db)} == {name: row[0] for name, row in rows.items()}

    cancelled = voxdock(empty_db_url, tmp_path, "batch", "cancel", "busy")
    assert cancelled.returncode == exit_codes.OK, cancelled.stderr
    assert (
        "batch busy: cancelled, 2 file(s) not processed, 1 in flight finish on their node" in cancelled.stdout
    )
    assert listing(empty_db_url, tmp_path)["busy"] == ["cancelled", "3", "0", "0", "0", "2", "1"]
    assert Counter(r.state for r in batch_jobs(db, ids["busy"])) == {"cancelled": 2, "claimed": 1}
    assert claim_next(db, "n", lease_seconds=60, max_attempts=3, only_batches=[ids["busy"]]) is None

    retried = voxdock(empty_db_url, tmp_path, "batch", "retry", "bad")
    assert retried.returncode == exit_codes.OK, retried.stderr
    out = " ".join(retried.stdout.split())
    assert "batch bad: running, 1 file(s) queued again" in out
    assert "no engine runs on this store now: start `voxdock worker`" in out
    assert listing(empty_db_url, tmp_path)["bad"] == ["running", "2", "1", "0", "0", "0", "1"]
    again = voxdock(empty_db_url, tmp_path, "batch", "retry", "busy")  # its cancelled files
    assert again.returncode == exit_codes.OK and "2 file(s) queued again" in again.stdout
    assert listing(empty_db_url, tmp_path)["busy"][0] == "running"


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("cancel", "nope"), exit_codes.USAGE, "no batch named 'nope'"),
        (("retry", "nope"), exit_codes.USAGE, "no batch named 'nope'"),
        (("cancel", "good"), exit_codes.INCOMPLETE, "batch good is done: nothing to cancel"),
        (("retry", "good"), exit_codes.INCOMPLETE, "batch good is done with no failed or cancelled file"),
        (("pause", "bad"), exit_codes.INCOMPLETE, "batch bad is failed: nothing to pause"),
        (("resume", "bad"), exit_codes.INCOMPLETE, "`voxdock batch retry bad` queues them again"),
    ],
)
def test_batch_commands_refuse_in_one_line(
    empty_db_url: str, db: Database, tmp_path: Path, args: tuple[str, str], status: int, message: str
) -> None:
    seed(db)
    before = {b.name: (b.state, b.queued, b.failed) for b in batch_progress(db)}
    result = voxdock(empty_db_url, tmp_path, "batch", *args)
    assert result.returncode == status, result.stdout + result.stderr
    assert message in " ".join(one_line(result).split())
    assert {b.name: (b.state, b.queued, b.failed) for b in batch_progress(db)} == before  # nothing changed


def test_nodes_lists_running_stopped_and_lost_nodes_until_they_expire(
    empty_db_url: str, db: Database, tmp_path: Path
) -> None:
    for name in ("up", "clean", "killed", "gone"):
        register_node(db, name, "host-a", 7, "test")
    heartbeat(db, "clean", {"totals": {"files_done": 5}}, state="stopped")
    with db.connection() as conn:
        conn.execute("UPDATE nodes SET heartbeat_at = now() - interval '2 minutes' WHERE id = 'killed'")
        conn.execute("UPDATE nodes SET heartbeat_at = now() - interval '20 minutes' WHERE id = 'gone'")
    result = voxdock(empty_db_url, tmp_path, "nodes")
    assert result.returncode == 0, result.stderr
    rows = {
        cells[1]: cells[4]
        for line in result.stdout.splitlines()
        if len(cells := [c.strip() for c in line.split("│")]) > 5 and cells[2] == "host-a"
    }
    assert rows == {"up": "running", "clean": "stopped", "killed": "lost"}


@pytest.mark.models
def test_submit_says_what_it_queued_once(empty_db_url: str, db: Database, tmp_path: Path) -> None:
    result = voxdock(empty_db_url, tmp_path, "submit", str(MEDIA / "monologue.ogg"), "--batch", "once")
    assert result.returncode == 0, result.stderr
    said = (result.stdout + result.stderr).count("queued")
    assert said == 1, result.stdout + result.stderr
    assert "batch once: 1 file(s) queued, 0 already stored" in result.stdout
