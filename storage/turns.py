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
from voxdock.storage.sources import PathMatch, StoredSource, find_sources


@dataclass(frozen=True)
class TurnRecord:
    start_s: float
    end_s: float
    speaker: str
    # True: two people talk at once here, and this turn gives the stretch to a voice the one-speaker-
    # at-a-time turns (overlapped = False) left out of it
    overlapped: bool = False


class TurnWriteError(RuntimeError):
    """Turns could not be stored as given (bad times or no speaker); nothing was changed."""


def check_turns(turns: Sequence[TurnRecord]) -> None:
    for seq, turn in enumerate(turns):
        if not (math.isfinite(turn.start_s) and math.isfinite(turn.end_s)) or turn.end_s <= turn.start_s:
            raise TurnWriteError(f"turn {seq}: bad times {turn.start_s}..{turn.end_s}")
        if not turn.speaker:
            raise TurnWriteError(f"turn {seq}: no speaker")


_COPY_SQL = (
    "COPY speaker_turns (source_id, seq, start_s, end_s, speaker, overlapped) FROM STDIN WITH (FORMAT BINARY)"
)


def write_turns(conn: psycopg.Connection, source_id: int, turns: Sequence[TurnRecord]) -> int:
    """Replace the source's turns inside the caller's transaction; returns the count stored."""
    check_turns(turns)
    conn.execute("DELETE FROM speaker_turns WHERE source_id = %s", (source_id,))
    ordered = sorted(turns, key=lambda t: (t.start_s, t.end_s, t.overlapped, t.speaker))
    with conn.cursor() as cur:
        with cur.copy(_COPY_SQL) as copy:
            copy.set_types(["int8", "int4", "float8", "float8", "text", "bool"])
            for seq, t in enumerate(ordered):
                copy.write_row(
                    (source_id, seq, float(t.start_s), float(t.end_s), t.speaker, bool(t.overlapped))
                )
        row = cur.execute("SELECT count(*) FROM speaker_turns WHERE source_id = %s", (source_id,)).fetchone()
    return int(row[0]) if row else -1


@dataclass(frozen=True)
class SourceTurns:
    source: StoredSource  # its status says whether the turns are from the last completed run
    turns: list[TurnRecord]


def read_turns(db: Database, path: str, *, match: PathMatch = "exact") -> list[SourceTurns]:
    """Turns of the source stored under `path`; with `match`, of every source in that folder or whose
    path contains it (in path order). Each source's turns in time order."""
    return [turns_of_source(db, source) for source in find_sources(db, path, match=match)]


def turns_of_source(db: Database, source: StoredSource) -> SourceTurns:
    return SourceTurns(source, source_turns(db, source.id))


def source_turns(db: Database, source_id: int) -> list[TurnRecord]:
    """The source's turns in time order (overlapped ones where they fall)."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT start_s, end_s, speaker, overlapped FROM speaker_turns WHERE source_id = %s ORDER BY seq",
            (source_id,),
        ).fetchall()
    return [TurnRecord(*row) for row in rows]
