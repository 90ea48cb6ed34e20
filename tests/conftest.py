"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from voxdock.storage.database import Database
from voxdock.storage.embedded import EmbeddedServer, start_embedded
from voxdock.storage.migrate import VectorSpec, migrate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_SPEC = VectorSpec(
    text_model="all-MiniLM-L6-v2", text_dim=384, voice_model="campplus-sv-zh-en-16k", voice_dim=192
)
FIXTURES = Path(__file__).parent / "fixtures"
MEDIA = FIXTURES / "media"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedServer:
    return start_embedded(tmp_path_factory.mktemp("voxdock-data"))


def _with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
def empty_db_url(pg_server: EmbeddedServer) -> Iterator[str]:
    """A brand-new, empty database on the session's embedded server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(pg_server.admin_url, name)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(empty_db_url: str) -> Iterator[Database]:
    """A migrated store with the default models' vector sizes."""
    database = Database(empty_db_url, max_size=12)
    migrate(database, TEST_SPEC)
    yield database
    database.close()
