"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psycopg
import pytest

from voxdock.engine.engine import Engine
from voxdock.engine.loader import LoadedModels, load_models
from voxdock.engine.models import ModelPlan, resolve_models
from voxdock.evaluation import Turn, mix_conversation, read_rttm
from voxdock.settings import Settings, load_settings
from voxdock.storage import jobs
from voxdock.storage.database import Database
from voxdock.storage.embedded import EmbeddedServer, start_embedded
from voxdock.storage.migrate import VectorSpec, migrate

if TYPE_CHECKING:
    from voxdock.engine.diarization.pipeline import SegmentationDiarizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_SPEC = VectorSpec(
    text_model="all-MiniLM-L6-v2", text_dim=384, voice_model="campplus-sv-zh-en-16k", voice_dim=192
)
FIXTURES = Path(__file__).parent / "fixtures"
MEDIA = FIXTURES / "media"
REAL = MEDIA / "real"  # real recordings with reference turns (see its README.md)


@pytest.fixture(scope="session")
def pg_server() -> EmbeddedServer:
    # Not under pytest's basetemp: a second pytest run that starts meanwhile resets that folder's
    # tree to mode 0700, and the server (which runs as another user when we are root) then loses its
    # own data directory and aborts. The folder goes after the server has stopped (atexit runs
    # last-in, first-out, and the server registers its stop when it starts).
    data_dir = Path(tempfile.mkdtemp(prefix="voxdock-test-store-"))
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    return start_embedded(data_dir)


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


# --- the engine, over real models ---------------------------------------------------------------


def test_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for tests: no .env, small defaults, the knobs held still (no self-tuning unless a
    test asks for it); overrides win."""
    base: dict[str, object] = {
        "_env_file": None,
        "voxdock_data_dir": tmp_path,
        "asr_workers": 2,
        "auto_tune": False,
    }
    base.update(overrides)
    return load_settings(**base)


test_settings.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def plan() -> ModelPlan:
    return resolve_models(
        asr_model="tiny.en",
        text_model="all-MiniLM-L6-v2",
        diarization_backend="auto",
        models_dir=Path("/nonexistent-models-dir"),
    )


@pytest.fixture(scope="session")
def models(plan: ModelPlan, tmp_path_factory: pytest.TempPathFactory) -> LoadedModels:
    return load_models(
        plan,
        device_setting="cpu",
        compute_type_setting="auto",
        asr_workers=2,
        cache_dir=tmp_path_factory.mktemp("model-cache"),
    )


@pytest.fixture
def make_engine(
    db: Database, plan: ModelPlan, models: LoadedModels, tmp_path: Path
) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def factory(**overrides: object) -> Engine:
        faults = overrides.pop("faults", None)
        engine = Engine(test_settings(tmp_path, **overrides), db, plan, models=models, faults=faults)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        if engine.state not in ("stopped", "created"):
            engine.stop(mode="requeue", timeout=60)


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the diarizer's networks are exported for ONNX Runtime, once per session."""
    return tmp_path_factory.mktemp("onnx-cache")


def make_diarizer(onnx_cache: Path | None) -> SegmentationDiarizer:
    """voxdock's own diarizer on the CPU: both networks in ONNX Runtime with an export folder, in torch
    (the code that runs on CUDA) without one."""
    from voxdock.engine.diarization import build_diarizer
    from voxdock.engine.diarization.pipeline import SegmentationDiarizer
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.oom import AdaptiveBatch
    from voxdock.engine.voice import VoiceEncoder

    voice = VoiceEncoder(resolve_voice(Path("/nonexistent")).require(), "cpu", onnx_cache=onnx_cache)
    built = build_diarizer(voice=voice, batch=AdaptiveBatch(64), onnx_cache=onnx_cache)
    assert isinstance(built, SegmentationDiarizer)
    runtime = "onnxruntime/cpu" if onnx_cache is not None else "torch/cpu"
    assert built.segmentation.runtime == voice.runtime == runtime
    return built


@pytest.fixture(scope="session")
def diarizer(onnx_cache: Path) -> SegmentationDiarizer:
    """voxdock's own diarizer as the engine runs it on a CPU host (both networks in ONNX Runtime)."""
    return make_diarizer(onnx_cache)


def run_voxdock(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m voxdock ARGS` in `cwd` with exactly `env`, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "voxdock", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's only line on stderr (a failure said in one line, no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def wait_for_batch(engine: Engine, batch_id: int, timeout: float = 300) -> jobs.BatchProgress:
    """Block until the batch has nothing queued or claimed and the engine holds no file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = jobs.batch_progress(engine.db, [batch_id])[0]
        if progress.queued + progress.claimed == 0 and engine.files_in_flight() == 0:
            return progress
        if engine.state == "failed":
            raise AssertionError(f"engine failed: {engine.error}")
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} not finished after {timeout} s: {progress}")


def four_real_voices() -> tuple[np.ndarray, list[Turn]]:
    """Four real people taking turns of 5 s (74 s): JFK, LJ and the two of pyannote's call (each
    one's speech in the call where the other is silent), with their reference turns."""
    from voxdock.engine.decode import decode_file

    voices = {
        "jfk": [decode_file(REAL / "jfk.wav").samples],
        "lj": [decode_file(REAL / "sb_LJ050-0131.wav").samples],
    }
    call = decode_file(REAL / "pyannote_sample.wav").samples
    turns = read_rttm(REAL / "pyannote_sample.rttm")
    talking = {t.speaker: np.zeros(call.shape[0], bool) for t in turns}
    for t in turns:
        talking[t.speaker][int(t.start * 16000) : int(t.end * 16000)] = True
    for speaker, mine in talking.items():
        alone = mine & ~np.any([other for name, other in talking.items() if name != speaker], axis=0)
        voices[speaker] = [call[alone]]
    return mix_conversation(voices, 5.0, seed=311)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings group the same items together, whatever the groups are called."""
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def two_voices(alike: float, per_voice: int = 20, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, true voice) of two tight voices whose centres are `alike` (cosine), `per_voice`
    units each."""
    from voxdock.engine.diarization.clustering import normalise

    rng = np.random.default_rng(3)
    first = normalise(rng.normal(size=(1, 192)))[0]
    other = normalise(rng.normal(size=(1, 192)))[0]
    other = normalise((other - (other @ first) * first)[None])[0]
    second = alike * first + np.sqrt(1 - alike**2) * other
    centres = np.repeat(np.stack([first, second]), per_voice, axis=0)
    return centres + spread * rng.normal(size=centres.shape) / np.sqrt(192), np.repeat([0, 1], per_voice)
