"""Ordered, versioned schema migrations, and the check that a store matches the configured models.

Migrations are the `NNNN_name.sql` files in `storage/migrations/`, applied in order, each in its own
transaction, under an advisory lock so two processes starting at once do not both apply one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from voxdock.storage.database import Database

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x766F78646F636B  # "voxdock"


class StoreMismatch(RuntimeError):
    """The store was made for other models (vector sizes); nothing was changed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class VectorSpec:
    """Which models fill the vector columns, and their sizes."""

    text_model: str
    text_dim: int
    voice_model: str
    voice_dim: int


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("voxdock.storage.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must run 1..N without gaps, found {versions}")
    return found


def latest_version() -> int:
    return len(available_migrations())


def current_version(conn: psycopg.Connection) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def read_vector_spec(conn: psycopg.Connection) -> VectorSpec | None:
    if not conn.execute("SELECT to_regclass('store_meta') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return None
    meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM store_meta").fetchall())
    if not {"text_model", "text_dim", "voice_model", "voice_dim"} <= meta.keys():
        return None
    return VectorSpec(meta["text_model"], int(meta["text_dim"]), meta["voice_model"], int(meta["voice_dim"]))


def check_vector_spec(stored: VectorSpec, wanted: VectorSpec, where: str) -> None:
    problems = []
    if (stored.text_model, stored.text_dim) != (wanted.text_model, wanted.text_dim):
        problems.append(
            f"text embeddings were made by {stored.text_model} ({stored.text_dim}-d), "
            f"configured is {wanted.text_model} ({wanted.text_dim}-d)"
        )
    if (stored.voice_model, stored.voice_dim) != (wanted.voice_model, wanted.voice_dim):
        problems.append(
            f"voice embeddings were made by {stored.voice_model} ({stored.voice_dim}-d), "
            f"configured is {wanted.voice_model} ({wanted.voice_dim}-d)"
        )
    if problems:
        raise StoreMismatch(
            f"the store at {where} was made with other models: {'; '.join(problems)}. "
            "Nothing was changed. Configure the same models, or point DATABASE_URL/VOXDOCK_DATA_DIR "
            "at another store."
        )


def migrate(db: Database, spec: VectorSpec) -> list[Migration]:
    """Bring the schema up to date; returns the migrations applied (none when already current)."""
    applied: list[Migration] = []
    with db.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        stored = read_vector_spec(conn)
        if stored is not None:
            check_vector_spec(stored, spec, db.masked_url)
        version = current_version(conn)
        for migration in available_migrations():
            if migration.version <= version:
                continue
            sql = migration.sql.replace("@TEXT_DIM@", str(int(spec.text_dim)))
            sql = sql.replace("@VOICE_DIM@", str(int(spec.voice_dim)))
            with conn.transaction():
                conn.execute(sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied.append(migration)
        if stored is None:
            conn.cursor().executemany(
                "INSERT INTO store_meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [
                    ("text_model", spec.text_model),
                    ("text_dim", str(spec.text_dim)),
                    ("voice_model", spec.voice_model),
                    ("voice_dim", str(spec.voice_dim)),
                ],
            )
    return applied
