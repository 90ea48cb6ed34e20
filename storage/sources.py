"""Finding stored sources by what an operator types: a path, a folder, part of a path, or a batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from psycopg.rows import class_row

from voxdock.storage.database import Database

PathMatch = Literal["exact", "folder", "contains"]

_MATCHES: dict[PathMatch, str] = {
    "exact": "path = %(p)s",
    "folder": "starts_with(path, rtrim(%(p)s, '/') || '/')",
    "contains": "strpos(path, %(p)s) > 0",
}


@dataclass(frozen=True)
class StoredSource:
    id: int
    path: str
    status: str  # sources.status: what is stored is from the last completed run unless 'done'
    segment_count: int
    duration_s: float | None
    diarization: str | None = None  # how its speakers were found; None before migration 0006
    # What the decoder did that a reader should know (several audio streams, opposite polarity);
    # None when nothing, and before migration 0007.
    audio_note: str | None = None


_COLUMNS = "id, path, status, segment_count, duration_s, diarization, audio_note"


def find_sources(db: Database, path: str, *, match: PathMatch = "exact") -> list[StoredSource]:
    """The source stored under `path`; with `match`, every source in that folder or whose path
    contains it. In path order."""
    with db.connection() as conn, conn.cursor(row_factory=class_row(StoredSource)) as cur:
        return cur.execute(
            f"SELECT {_COLUMNS} FROM sources WHERE {_MATCHES[match]} ORDER BY path", {"p": path}
        ).fetchall()


def batch_sources(db: Database, batch_id: int) -> list[StoredSource]:
    """Every source queued in the batch, in path order."""
    with db.connection() as conn, conn.cursor(row_factory=class_row(StoredSource)) as cur:
        return cur.execute(
            f"SELECT {_COLUMNS} FROM sources WHERE id IN (SELECT source_id FROM jobs WHERE batch_id = %s)"
            " ORDER BY path",
            (batch_id,),
        ).fetchall()
