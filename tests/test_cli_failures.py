"""How voxdock fails: one line, a documented exit status, never a password, nothing left behind."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import one_line, run_voxdock

from voxdock import exit_codes
from voxdock.storage.database import Database, StoreUnavailable
from voxdock.storage.urls import mask_url, register_url, scrub

SECRET = "Sw0rdfish42"

# (DATABASE_URL, the pieces of the password that must never be shown)
MALFORMED = {
    "no scheme": (f"voxdock:{SECRET}@db.example/vox", [SECRET]),
    "bad IPv6 bracket": (f"postgresql://ops:{SECRET}@[::1/vox", [SECRET]),
    "bad % escape": (f"postgresql://ops:{SECRET}%zz@db.example/vox", [SECRET, "%zz"]),
    "misspelt keyword": (f"host=db.example passwrd={SECRET} dbname=vox", [SECRET]),
    "misspelt query parameter": (f"postgresql://ops@db.example/vox?passwrd={SECRET}", [SECRET]),
    "unescaped @": ("postgresql://ops:Sw0rd@fish42@db.example/vox", ["Sw0rd", "fish42"]),
}


def voxdock(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`voxdock ARGS` with only the given settings (no .env, no inherited DATABASE_URL)."""
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "VOXDOCK_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
    }
    return run_voxdock(tmp_path, *args, env={**base, **env})


@pytest.mark.parametrize("form", MALFORMED)
def test_a_malformed_database_url_is_one_line_without_its_password(tmp_path: Path, form: str) -> None:
    url, pieces = MALFORMED[form]
    result = voxdock(tmp_path, "db", "status", DATABASE_URL=url)
    for piece in pieces:
        assert piece not in result.stdout + result.stderr
    assert result.returncode == exit_codes.USAGE
    assert one_line(result).startswith("voxdock: invalid setting DATABASE_URL=")


@pytest.mark.parametrize("form", MALFORMED)
def test_the_store_never_quotes_a_password_from_the_driver(form: str) -> None:
    # Past the settings check too (Database is also opened by code that reads no settings).
    url, pieces = MALFORMED[form]
    with pytest.raises(StoreUnavailable) as info:
        Database(url)
    for piece in pieces:
        assert piece not in str(info.value)
    assert "cannot connect to" in str(info.value)


def test_an_unreachable_server_is_status_3_without_the_password(tmp_path: Path) -> None:
    result = voxdock(tmp_path, "db", "status", DATABASE_URL=f"postgresql://ops:{SECRET}@127.0.0.1:1/vox")
    assert SECRET not in result.stdout + result.stderr
    assert result.returncode == exit_codes.STORE_UNAVAILABLE
    line = one_line(result)
    assert "cannot connect to postgresql://ops:***@127.0.0.1:1/vox" in line


@pytest.mark.parametrize("form", MALFORMED)
def test_mask_url_hides_the_password_of_any_shape(form: str) -> None:
    url, pieces = MALFORMED[form]
    masked = mask_url(url)
    assert "***" in masked
    for piece in pieces:
        assert piece not in masked


def test_scrub_removes_quoted_pieces_of_a_registered_password() -> None:
    register_url("postgresql://ops:Tr0ub4dor&3@db.example/vox")
    text = 'failed near "b4dor&3@db" and postgresql://ops:Tr0ub4dor&3@db.example/vox'
    cleaned = scrub(text)
    assert "Tr0ub" not in cleaned and "4dor" not in cleaned
    assert "postgresql://ops:***@db.example/vox" in cleaned


def test_logs_never_carry_a_password(caplog: pytest.LogCaptureFixture) -> None:
    from voxdock.cli import ScrubSecrets

    register_url(f"postgresql://ops:{SECRET}@db.example/vox")
    record = logging.LogRecord("psycopg.pool", logging.WARNING, __file__, 1, "error with %s", (SECRET,), None)
    assert ScrubSecrets().filter(record)
    assert SECRET not in record.getMessage() and "***" in record.getMessage()


@pytest.mark.parametrize("where", ["/proc/nope", "file", "under a file"])
def test_an_unusable_data_dir_is_one_line_naming_it(tmp_path: Path, where: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    data = {"/proc/nope": Path("/proc/nope"), "file": afile, "under a file": afile / "sub"}[where]
    result = voxdock(tmp_path, "db", "status", VOXDOCK_DATA_DIR=str(data))
    assert result.returncode == exit_codes.USAGE
    line = one_line(result)
    assert f"VOXDOCK_DATA_DIR {data}" in line
    assert ("not a directory" if where == "file" else "cannot be used") in line.lower()


# Runs the command in-process, then tells which heavy libraries it imported: none may load for a
# command that should have stopped at its arguments.
PROBE = """
import sys, time
from voxdock.cli import app
started = time.monotonic()
try:
    app(sys.argv[1:], prog_name="voxdock")
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "ctranslate2", "faster_whisper", "onnxruntime") if m in sys.modules)
print(f"exit={code} heavy={','.join(heavy) or 'none'} took={time.monotonic() - started:.2f}")
"""


def probe(tmp_path: Path, *args: str) -> tuple[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env["VOXDOCK_DATA_DIR"] = str(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.strip().splitlines()[-1], result.stderr


@pytest.mark.parametrize("command", ["ingest", "submit", "console"])
def test_a_missing_path_is_status_2_before_anything_loads(tmp_path: Path, command: str) -> None:
    found = tmp_path / "here.wav"
    found.write_bytes(b"RIFF")
    summary, stderr = probe(tmp_path, command, str(found), "/missing/path", str(tmp_path / "nope"))
    assert summary.startswith(f"exit={exit_codes.USAGE} heavy=none"), summary
    assert float(summary.rsplit("took=", 1)[1]) < 1.0  # the check itself; no model, no store
    assert stderr.strip().count("\n") == 0
    assert "/missing/path: no such file or folder" in stderr and f"{tmp_path / 'nope'}: no such" in stderr
    assert not (tmp_path / "data").exists()  # the store was never opened


@pytest.mark.parametrize("command", ["ingest", "submit"])
def test_an_empty_folder_leaves_no_batch(tmp_path: Path, command: str) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no media here\n")
    summary, stderr = probe(tmp_path, command, str(empty))
    assert summary.startswith(f"exit={exit_codes.INCOMPLETE} heavy=none"), summary
    assert "no media files found under the given paths" in stderr
    assert not (tmp_path / "data").exists()  # no store opened, so no batch made


def _has_cuda() -> bool:
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.skipif(_has_cuda(), reason="needs a machine without a GPU")
def test_an_engine_that_cannot_start_fails_the_ingest_and_cancels_its_batch(tmp_path: Path) -> None:
    from conftest import MEDIA

    media = str(MEDIA / "monologue.ogg")
    result = voxdock(tmp_path, "ingest", media, "--batch", "nogpu", COMPUTE_DEVICE="cuda")
    assert result.returncode == exit_codes.ENGINE_FAILED, result.stdout + result.stderr
    line = one_line(result)
    assert line.startswith("voxdock: the engine could not start:")
    assert "batch nogpu cancelled with 1 file(s) not processed" in line
    listing = " ".join(voxdock(tmp_path, "batch", "list").stdout.split())
    # files, done, failed, skipped, cancelled, left: nothing claimed or queued, nothing runs it later
    assert "nogpu │ cancelled │ 1 │ 0 │ 0 │ 0 │ 1 │ 0" in listing
    status = " ".join(voxdock(tmp_path, "db", "status").stdout.split())
    assert "claimed" not in status


@pytest.mark.slow
@pytest.mark.models
def test_sigterm_stops_an_ingest_cleanly(tmp_path: Path) -> None:
    import signal
    import time

    from conftest import MEDIA

    env = {
        **os.environ,
        "VOXDOCK_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    env.pop("DATABASE_URL", None)
    media = [str(MEDIA / name) for name in ("dialogue_2spk.wav", "dialogue_3spk.flac", "monologue.ogg")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxdock", "ingest", *media, "--batch", "termed"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "batch termed: 3 file(s) to process" in first, first
    time.sleep(3)  # models loading or files in flight: either way it must stop cleanly
    proc.send_signal(signal.SIGTERM)
    out, errors = proc.communicate(timeout=120)
    assert "Traceback" not in errors and "terminate called" not in errors, errors
    assert proc.returncode == exit_codes.TERMINATED, out + errors
    assert "batch termed paused with" in " ".join(out.split())
    status = " ".join(voxdock(tmp_path, "db", "status").stdout.split())
    assert "claimed" not in status  # every file in flight went back to the queue
