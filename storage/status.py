"""What `voxdock db status` reports: the server, the schema version, and row counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxdock.storage.database import Database, ServerInfo
from voxdock.storage.migrate import VectorSpec, current_version, latest_version, read_vector_spec

_COUNTED_TABLES = ("sources", "batches", "jobs", "segments", "speaker_turns", "speakers", "nodes")


@dataclass(frozen=True)
class StoreStatus:
    server: ServerInfo
    schema_version: int
    latest_version: int
    vectors: VectorSpec | None
    row_counts: dict[str, int] = field(default_factory=dict)
    jobs_by_state: dict[str, int] = field(default_factory=dict)
    batches_by_state: dict[str, int] = field(default_factory=dict)  # running, paused, done, failed, ...


def store_status(db: Database) -> StoreStatus:
    server = db.server_info()
    with db.connection() as conn:
        version = current_version(conn)
        vectors = read_vector_spec(conn)
        counts: dict[str, int] = {}
        by_state: dict[str, int] = {}
        batches: dict[str, int] = {}
        if version > 0:
            for table in _COUNTED_TABLES:
                exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
                if not exists or not exists[0]:  # a store behind the latest schema
                    continue
                row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                counts[table] = int(row[0]) if row else 0
            by_state = {
                str(state): int(n)
                for state, n in conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
            }
            view = conn.execute("SELECT to_regclass('batch_status') IS NOT NULL").fetchone()
            if view and view[0]:  # what each batch is (from version 3)
                batches = {
                    str(state): int(n)
                    for state, n in conn.execute(
                        "SELECT state, count(*) FROM batch_status GROUP BY state"
                    ).fetchall()
                }
    return StoreStatus(server, version, latest_version(), vectors, counts, by_state, batches)
