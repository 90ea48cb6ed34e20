"""Connection pool over either the embedded server or the server named by DATABASE_URL.

The engine calls the store from many threads; psycopg_pool hands each call its own connection, and
every connection has the pgvector types registered so numpy arrays go in and out as vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool, PoolTimeout

from voxdock.storage.embedded import EmbeddedServer, restart_embedded, start_embedded
from voxdock.storage.urls import mask_url, register_url, scrub

log = logging.getLogger(__name__)
# The pool warns at every failed reconnection attempt; the engine reports an outage once, itself.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

EXTENSION_LOCK_KEY = 0x766F78657874  # "voxext"
POOL_WAIT_S = 5.0  # how long a store call waits for a connection before it counts as unavailable
PROBE_TIMEOUT_S = 3


class StoreUnavailable(RuntimeError):
    """The database could not be reached; the message names the (masked) server and the reason."""


def is_store_unavailable(exc: BaseException) -> bool:
    """The server could not be reached or a connection broke (a restart, a network cut): worth waiting
    out and retrying, unlike an error in the query itself."""
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, StoreUnavailable))


@dataclass(frozen=True)
class ServerInfo:
    masked_url: str
    embedded: bool
    data_dir: Path | None
    version: str


def _configure(conn: psycopg.Connection) -> None:
    register_vector(conn)
    conn.commit()


class Database:
    """A pool of connections to one voxdock database. Thread-safe."""

    def __init__(self, url: str, *, embedded: EmbeddedServer | None = None, max_size: int = 8) -> None:
        register_url(url)  # from here on, no message from the driver can show its password
        self.url = url
        self.embedded = embedded
        self.masked_url = "embedded PostgreSQL in " + str(embedded.data_dir) if embedded else mask_url(url)
        self._probe_and_prepare()
        self._max_size = max_size
        self._pool = self._new_pool()
        try:
            self._pool.open(wait=True, timeout=15)
        except Exception as exc:
            self._pool.close()
            raise StoreUnavailable(f"cannot connect to {self.masked_url}: {_reason(exc)}") from None

    def _new_pool(self) -> ConnectionPool:
        return ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._max_size,
            configure=_configure,
            # After a server restart every pooled connection is dead: test each one as it is taken.
            check=ConnectionPool.check_connection,
            timeout=POOL_WAIT_S,
            open=False,
            name="voxdock",
            kwargs={"application_name": "voxdock"},
        )

    def reset_pool(self) -> None:
        """Close every pooled connection and start a fresh pool. A server asked to shut down waits
        for its open sessions to end; this lets it, and takes nothing from calls in progress."""
        old, self._pool = self._pool, self._new_pool()
        self._pool.open(wait=False)
        try:
            old.close(timeout=1.0)
        except Exception as exc:  # its connections are gone anyway
            log.debug("closing the old pool: %s", _reason(exc))

    def _probe_and_prepare(self) -> None:
        """Connect once directly, for a clear error instead of a pool timeout, and make sure the
        vector type exists so every pooled connection can register it."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                present = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
                if present is None:
                    with conn.transaction():  # IF NOT EXISTS alone races with another process
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EXTENSION_LOCK_KEY,))
                        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            raise StoreUnavailable(
                f"{self.masked_url}: the pgvector extension is not installed in this database and this "
                "user may not create it; ask an administrator to run CREATE EXTENSION vector"
            ) from None
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to {self.masked_url}: {_reason(exc)}") from None

    @classmethod
    def open(cls, database_url: str | None, data_dir: Path, *, max_size: int = 8) -> Database:
        """Open DATABASE_URL's server, or start/join the embedded one when it is unset."""
        if database_url:
            return cls(database_url, max_size=max_size)
        server = start_embedded(data_dir)
        return cls(server.url, embedded=server, max_size=max_size)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._pool.connection() as conn:
            yield conn

    def ping(self) -> None:
        """Raise unless the server answers a fresh connection now (the pool may hold dead ones)."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=PROBE_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")

    def restart_embedded(self) -> bool:
        """Start the embedded server this process uses again if it died; True when it was restarted
        (False: it was running, or a sibling process restarted it first)."""
        if self.embedded is None:
            return False
        before = self.embedded.pid
        server = restart_embedded(self.embedded.data_dir)
        self.embedded = server
        if server.url != self.url:  # the same socket directory: only if the package changed its layout
            log.warning("the restarted embedded server has a new address; reconnecting there")
            self.url = server.url
            register_url(server.url)
            self._pool.conninfo = server.url
        return server.pid != before

    def server_info(self) -> ServerInfo:
        with self.connection() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return ServerInfo(
            masked_url=self.masked_url,
            embedded=self.embedded is not None,
            data_dir=self.embedded.data_dir if self.embedded else None,
            version=str(row[0]) if row else "?",
        )

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    # libpq quotes the connection string (or a piece of it) in its errors: keep the message, never a
    # secret from it.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return scrub(text)
