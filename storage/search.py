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


def search_text(
    db: Database, query_embedding: np.ndarray, *, limit: int = 10, path_contains: str | None = None
) -> list[SearchHit]:
    """The `limit` segments whose text embedding is nearest the query's (cosine)."""
    vector = np.asarray(query_embedding, dtype=np.float32).reshape(-1)
    with db.connection() as conn, conn.cursor(row_factory=class_row(SearchHit)) as cur:
        # A larger candidate list than the default 40 keeps recall up when a path filter drops hits.
        conn.execute("SET hnsw.ef_search = 100")
        return cur.execute(
            "SELECT g.id AS segment_id, s.path, g.start_s, g.end_s, g.speaker, g.text,"
            " 1 - (g.text_embedding <=> %(q)s) AS similarity"
            " FROM segments g JOIN sources s ON s.id = g.source_id"
            " WHERE g.text_embedding IS NOT NULL"
            " AND (%(path)s::text IS NULL OR s.path LIKE '%%' || %(path)s || '%%')"
            " ORDER BY g.text_embedding <=> %(q)s LIMIT %(limit)s",
            {"q": vector, "path": path_contains, "limit": limit},
        ).fetchall()
