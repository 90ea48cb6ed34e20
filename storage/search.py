"""Semantic search over stored segments: nearest text embeddings through the HNSW index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from psycopg.rows import class_row

from voxdock.storage.database import Database


@dataclass(frozen=True)
class SearchHit:
    segment_id: int
    path: str
    start_s: float
    end_s: float
    speaker: str | None
    text: str
    similarity: float  # cosine, 1 = same meaning
    speaker_name: str | None = None  # the enrolled speaker the segment's voice was matched to


def search_text(
    db: Database,
    query_embedding: np.ndarray,
    *,
    limit: int = 10,
    path_contains: str | None = None,
    speaker_id: int | None = None,
) -> list[SearchHit]:
    """The `limit` segments whose text embedding is nearest the query's (cosine); with `speaker_id`,
    only segments matched to that enrolled speaker (storage/speakers.py: find_speaker gives the id)."""
    vector = np.asarray(query_embedding, dtype=np.float32).reshape(-1)
    with db.connection() as conn, conn.cursor(row_factory=class_row(SearchHit)) as cur:
        # A larger candidate list than the default 40 keeps recall up when a path filter drops hits.
        conn.execute("SET hnsw.ef_search = 100")
        if speaker_id is not None:
            # One speaker may hold few of the nearest segments: the index scan goes on past its
            # candidate list until enough of theirs are found (pgvector 0.8 iterative scans).
            conn.execute("SET hnsw.iterative_scan = strict_order")
        hits = cur.execute(
            "SELECT g.id AS segment_id, s.path, g.start_s, g.end_s, g.speaker, g.text,"
            " 1 - (g.text_embedding <=> %(q)s) AS similarity, p.name AS speaker_name"
            " FROM segments g JOIN sources s ON s.id = g.source_id"
            " LEFT JOIN speakers p ON p.id = g.speaker_id"
            " WHERE g.text_embedding IS NOT NULL"
            " AND (%(path)s::text IS NULL OR s.path LIKE '%%' || %(path)s || '%%')"
            " AND (%(speaker)s::bigint IS NULL OR g.speaker_id = %(speaker)s)"
            " ORDER BY g.text_embedding <=> %(q)s LIMIT %(limit)s",
            {"q": vector, "path": path_contains, "speaker": speaker_id, "limit": limit},
        ).fetchall()
        if speaker_id is not None:
            conn.execute("RESET hnsw.iterative_scan")
        return hits
