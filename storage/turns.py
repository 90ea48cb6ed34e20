"""Speaker turns of a source (who speaks when, overlapped speech marked), written with its segments.

`write_turns` runs inside `replace_segments`' transaction, so a source's turns and segments are
replaced together or not at all; `read_turns` gives them back in time order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from voxdock.storage.database import Database


@dataclass(frozen=True)
class TurnRecord:
    start_s: float
    end_s: float
    speaker: str
    overlapped: bool = False  # a second speaker, talking over the one in the turn at the same time


class TurnWriteError(RuntimeError):
    """Turns could not be stored as given (bad times or no speaker); nothing was changed."""


def check_turns(turns: Sequence[TurnRecord]) -> None:
    for seq, turn in enumerate(turns):
        if not (math.isfinite(turn.start_s) and math.isfinite(turn.end_s)) or turn.end_s <= turn.start_s:
            raise TurnWriteError(f"turn {seq}: bad times {turn.start_s}..{turn.end_s}")
        if not turn.speaker:
            raise TurnWriteError(f"turn {seq}: no speaker")


def write_turns(conn: psycopg.Connection, source_id: int, turns: Sequence[TurnRecord]) -> int:
    """Replace the source's turns inside the caller's transaction; returns the count stored."""
    check_turns(turns)
    conn.execute("DELETE FROM speaker_turns WHERE source_id = %s", (source_id,))
    ordered = sorted(turns, key=lambda t: (t.start_s, t.end_s, t.overlapped, t.speaker))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO speaker_turns (source_id, seq, start_s, end_s, speaker, overlapped)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (source_id, seq, float(t.start_s), float(t.end_s), t.speaker, bool(t.overlapped))
                for seq, t in enumerate(ordered)
            ],
        )
        row = cur.execute("SELECT count(*) FROM speaker_turns WHERE source_id = %s", (source_id,)).fetchone()
    return int(row[0]) if row else -1


@dataclass(frozen=True)
class SourceTurns:
    path: str
    status: str
    turns: list[TurnRecord]


def read_turns(db: Database, path: str, *, exact: bool = True) -> list[SourceTurns]:
    """Turns of the source stored under `path` (or, not `exact`, of every source whose path contains
    it, in path order), each in time order."""
    where = "path = %s" if exact else "strpos(path, %s) > 0"
    with db.connection() as conn:
        sources = conn.execute(
            f"SELECT id, path, status FROM sources WHERE {where} ORDER BY path", (path,)
        ).fetchall()
        out = []
        for source_id, source_path, status in sources:
            rows = conn.execute(
                "SELECT start_s, end_s, speaker, overlapped FROM speaker_turns WHERE source_id = %s"
                " ORDER BY seq",
                (source_id,),
            ).fetchall()
            out.append(SourceTurns(source_path, status, [TurnRecord(*row) for row in rows]))
    return out
