"""Nodes: each running engine writes a heartbeat with its latest metrics snapshot, so any console
can show the whole cluster, and leases can tell a live node from a dead one.

A node is `running` (or `stopping`) while it heartbeats, `stopped` once it stopped cleanly, and shown
as `lost` when it went silent without stopping (killed, its host gone) for `LOST_AFTER_S`. Stopped
and lost nodes leave the list `SHOWN_FOR_S` after their last heartbeat, and their rows are deleted
`FORGET_AFTER_S` after it, when the next node registers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row

from voxdock.storage.database import Database

LOST_AFTER_S = 30.0  # a node heartbeats every few seconds; this much silence means it is gone
SHOWN_FOR_S = 600.0  # how long a stopped or lost node stays in the list
FORGET_AFTER_S = 86400.0  # when its row is deleted
NODE_STATES = ("running", "stopping", "stopped", "lost")


@dataclass(frozen=True)
class NodeRow:
    id: str
    hostname: str
    pid: int
    version: str
    state: str  # running, stopping, stopped, or lost (silent without having stopped)
    started_at: datetime
    heartbeat_at: datetime
    seconds_since_heartbeat: float
    metrics: dict[str, Any]


def register_node(db: Database, node_id: str, hostname: str, pid: int, version: str) -> None:
    """Record this node as running, and forget nodes silent for longer than `FORGET_AFTER_S`."""
    with db.connection() as conn, conn.transaction():
        conn.execute(
            "DELETE FROM nodes WHERE heartbeat_at < now() - make_interval(secs => %s) AND id <> %s",
            (FORGET_AFTER_S, node_id),
        )
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


def list_nodes(
    db: Database, *, seen_within_s: float = SHOWN_FOR_S, lost_after_s: float = LOST_AFTER_S
) -> list[NodeRow]:
    """Running nodes, and those stopped or lost within `seen_within_s`; a node silent for
    `lost_after_s` without having stopped, or a process of this host that is gone, is `lost`."""
    with db.connection() as conn, conn.cursor(row_factory=class_row(NodeRow)) as cur:
        rows = cur.execute(
            "SELECT id, hostname, pid, version,"
            " CASE WHEN state <> 'stopped' AND heartbeat_at < now() - make_interval(secs => %(lost)s)"
            "   THEN 'lost' ELSE state END AS state,"
            " started_at, heartbeat_at,"
            " extract(epoch FROM now() - heartbeat_at)::float8 AS seconds_since_heartbeat, metrics"
            " FROM nodes WHERE heartbeat_at > now() - make_interval(secs => %(seen)s)"
            " ORDER BY hostname, started_at",
            {"lost": lost_after_s, "seen": seen_within_s},
        ).fetchall()
    return [
        dataclasses.replace(row, state="lost")
        if row.state in ("running", "stopping") and process_gone(row.hostname, row.pid)
        else row
        for row in rows
    ]


def process_gone(hostname: str, pid: int) -> bool:
    """Whether the process is known to be gone: only on this host can a pid be checked."""
    if hostname != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def node_gone(
    hostname: str | None, pid: int | None, state: str | None, silent_s: float | None, *, lost_after_s: float
) -> bool:
    """A node is gone when it has no row (forgotten), stopped cleanly, has been silent for
    `lost_after_s`, or is a process of this host that no longer exists (killed)."""
    if hostname is None or pid is None or state is None or silent_s is None:
        return True
    return state == "stopped" or silent_s > lost_after_s or process_gone(hostname, pid)
