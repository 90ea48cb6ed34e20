"""Nodes: each running engine writes a heartbeat with its latest metrics snapshot, so any console
can show the whole cluster, and leases can tell a live node from a dead one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row

from voxdock.storage.database import Database


@dataclass(frozen=True)
class NodeRow:
    id: str
    hostname: str
    pid: int
    version: str
    state: str
    started_at: datetime
    heartbeat_at: datetime
    seconds_since_heartbeat: float
    metrics: dict[str, Any]


def register_node(db: Database, node_id: str, hostname: str, pid: int, version: str) -> None:
    with db.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO nodes (id, hostname, pid, version) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid,"
            " version = excluded.version, state = 'running', started_at = now(), heartbeat_at = now()",
            (node_id, hostname, pid, version),
        )


def heartbeat(db: Database, node_id: str, metrics: dict[str, Any], *, state: str = "running") -> None:
    with db.connection() as conn, conn.transaction():
        conn.execute(
            "UPDATE nodes SET heartbeat_at = now(), metrics = %s, state = %s WHERE id = %s",
            (json.dumps(metrics), state, node_id),
        )


def list_nodes(db: Database, *, seen_within_s: float = 3600.0) -> list[NodeRow]:
    with db.connection() as conn, conn.cursor(row_factory=class_row(NodeRow)) as cur:
        return cur.execute(
            "SELECT id, hostname, pid, version, state, started_at, heartbeat_at,"
            " extract(epoch FROM now() - heartbeat_at)::float8 AS seconds_since_heartbeat, metrics"
            " FROM nodes WHERE heartbeat_at > now() - make_interval(secs => %s)"
            " ORDER BY hostname, started_at",
            (seen_within_s,),
        ).fetchall()
