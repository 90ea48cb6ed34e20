"""Writing a source's segments (and speaker turns): one transaction that replaces whatever the source
had before.

Rows go in with binary COPY (set-based), then the count in the table is checked against the count
given, so a write can never silently drop rows. Either the whole new set is stored and the source is
marked done, or nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from voxdock.storage.database import Database
from voxdock.storage.speakers import refresh_source
from voxdock.storage.turns import TurnRecord, TurnWriteError, check_turns, write_turns


class SegmentWriteError(RuntimeError):
    """Segments could not be stored as given; the transaction was rolled back, nothing changed."""


@dataclass(frozen=True)
class SegmentRecord:
    start_s: float
    end_s: float
    text: str
    speaker: str | None
    text_embedding: np.ndarray | None
    voice_embedding: np.ndarray | None
    speaker_id: int | None = None
    # (start_s, end_s, word, probability) in time order, times from the start of the source
    words: Sequence[tuple[float, float, str, float]] = ()


@dataclass(frozen=True)
class ModelSet:
    asr: str
    diarizer: str
    voice: str
    text_model: str


@dataclass(frozen=True)
class SourceOutcome:
    """What the engine learned about a source, stored beside its segments."""

    duration_s: float
    content_hash: str | None
    speaker_count: int | None
    fast_path: bool | None
    node_id: str | None
    diarization: str | None = None  # how its speakers were found (migration 0006)
    audio_note: str | None = None  # what the decoder did that a reader should know (migration 0007)


_COPY_SQL = (
    "COPY segments (source_id, seq, start_s, end_s, text, speaker, speaker_id,"
    " text_embedding, voice_embedding, model_set_id, words) FROM STDIN WITH (FORMAT BINARY)"
)
_COPY_TYPES = [
    "int8",
    "int4",
    "float8",
    "float8",
    "text",
    "text",
    "int8",
    "vector",
    "vector",
    "int4",
    "jsonb",
]


def vector_dims(conn: psycopg.Connection) -> tuple[int, int]:
    """(text, voice) sizes of the vector columns, read from the catalog."""
    rows: dict[str, int] = dict(
        conn.execute(
            "SELECT attname, atttypmod FROM pg_attribute"
            " WHERE attrelid = 'segments'::regclass AND attname IN ('text_embedding', 'voice_embedding')"
        ).fetchall()
    )
    return int(rows["text_embedding"]), int(rows["voice_embedding"])


def _model_set_id(conn: psycopg.Connection, models: ModelSet) -> int:
    row = conn.execute(
        "INSERT INTO model_sets (asr, diarizer, voice, text_model) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (asr, diarizer, voice, text_model) DO UPDATE SET asr = excluded.asr"
        " RETURNING id",
        (models.asr, models.diarizer, models.voice, models.text_model),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _as_vector(value: np.ndarray | None, dim: int, what: str, seq: int) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float32).reshape(-1)
    if array.shape[0] != dim:
        raise SegmentWriteError(
            f"segment {seq}: {what} has {array.shape[0]} dimensions, the store wants {dim}"
        )
    if not np.all(np.isfinite(array)):
        raise SegmentWriteError(f"segment {seq}: {what} contains NaN or infinity")
    return array


def replace_segments(
    db: Database,
    source_id: int,
    segments: Sequence[SegmentRecord],
    models: ModelSet,
    outcome: SourceOutcome,
    turns: Sequence[TurnRecord] = (),
) -> int:
    """Replace all segments of `source_id` with `segments` and its speaker turns with `turns` (see
    storage/turns.py), mark the source done; returns the count of segments.

    Raises SegmentWriteError (nothing changed) when a vector has the wrong size, a turn is malformed,
    or a count stored differs from the count given.
    """
    try:
        check_turns(turns)
    except TurnWriteError as exc:
        raise SegmentWriteError(f"source {source_id}: {exc}") from None
    with db.connection() as conn, conn.transaction():
        # Lock the source row: two writers of the same source serialise here instead of interleaving.
        locked = conn.execute("SELECT id FROM sources WHERE id = %s FOR UPDATE", (source_id,)).fetchone()
        if locked is None:
            raise SegmentWriteError(f"source {source_id} does not exist")
        text_dim, voice_dim = vector_dims(conn)
        model_set_id = _model_set_id(conn, models)
        rows = []
        for seq, seg in enumerate(segments):
            if not (np.isfinite(seg.start_s) and np.isfinite(seg.end_s)) or seg.end_s < seg.start_s:
                raise SegmentWriteError(f"segment {seq}: bad times {seg.start_s}..{seg.end_s}")
            rows.append(
                (
                    source_id,
                    seq,
                    float(seg.start_s),
                    float(seg.end_s),
                    seg.text,
                    seg.speaker,
                    seg.speaker_id,
                    _as_vector(seg.text_embedding, text_dim, "text embedding", seq),
                    _as_vector(seg.voice_embedding, voice_dim, "voice embedding", seq),
                    model_set_id,
                    _words_json(seg.words, seq),
                )
            )
        conn.execute("DELETE FROM segments WHERE source_id = %s", (source_id,))
        with conn.cursor() as cur:
            with cur.copy(_COPY_SQL) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
            stored = cur.execute(
                "SELECT count(*) FROM segments WHERE source_id = %s", (source_id,)
            ).fetchone()
        stored_count = int(stored[0]) if stored else -1
        if stored_count != len(rows):
            raise SegmentWriteError(
                f"source {source_id}: {len(rows)} segments given but {stored_count} stored; rolled back"
            )
        stored_turns = write_turns(conn, source_id, turns)
        if stored_turns != len(turns):
            raise SegmentWriteError(
                f"source {source_id}: {len(turns)} turns given but {stored_turns} stored; rolled back"
            )
        conn.execute(
            "UPDATE sources SET status = 'done', error = NULL, segment_count = %s, duration_s = %s,"
            " content_hash = coalesce(%s, content_hash), speaker_count = %s, fast_path = %s,"
            " diarization = %s, audio_note = %s, processed_by = %s, processed_at = now(), updated_at = now()"
            " WHERE id = %s",
            (
                stored_count,
                outcome.duration_s,
                outcome.content_hash,
                outcome.speaker_count,
                outcome.fast_path,
                outcome.diarization,
                outcome.audio_note,
                outcome.node_id,
                source_id,
            ),
        )
    # Its speakers named after enrolled voices and grouped into the archive's voices, in a transaction
    # of its own: naming serialises every writer on one lock (storage/speakers.py), which must not be
    # held with the source row that claimers skip while it is locked. Segments stand without names
    # for that moment; a write cut off here is made again whole, or `voxdock speakers match` redoes it.
    with db.connection() as conn, conn.transaction():
        refresh_source(conn, source_id)
    return stored_count


def _words_json(words: Sequence[tuple[float, float, str, float]], seq: int) -> Jsonb | None:
    """The words as stored (see migration 0004), or None when the segment has none."""
    if not words:
        return None
    out = []
    for start, end, word, probability in words:
        if not (np.isfinite(start) and np.isfinite(end)) or end < start:
            raise SegmentWriteError(f"segment {seq}: word {word!r} has bad times {start}..{end}")
        # Milliseconds are finer than Whisper's word timing; rounding keeps the rows small.
        out.append(
            {
                "start": round(float(start), 3),
                "end": round(float(end), 3),
                "word": word,
                "p": round(float(probability), 3),
            }
        )
    return Jsonb(out)


def count_segments(db: Database, source_id: int) -> int:
    with db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM segments WHERE source_id = %s", (source_id,)).fetchone()
    return int(row[0]) if row else 0
