"""Settings: defaults, environment and .env, one-line errors, secrets masked, .env.example complete."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from voxdock.engine.vram import BudgetSetting
from voxdock.settings import Settings, SettingsError, load_settings
from voxdock.storage.urls import mask_url

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_follow_the_operators_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "ASR_WORKERS", "VOICE_ENROLLMENT_BATCH_SIZE", "FAST_PATH_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.database_url is None
    assert (s.asr_workers, s.voice_enrollment_batch_size) == (2, 32)
    assert s.fast_path_threshold is None  # calibrated per voice model unless set
    assert s.compute_device == "auto" and s.asr_model == "tiny.en"


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ASR_WORKERS=5\nCOMPUTE_DEVICE=CPU\nTEXT_EMBEDDING_BATCH_SIZE=16\n")
    monkeypatch.setenv("TEXT_EMBEDDING_BATCH_SIZE", "128")
    s = load_settings()
    assert s.asr_workers == 5  # from .env
    assert s.compute_device == "cpu"  # case-insensitive
    assert s.text_embedding_batch_size == 128  # the environment wins


@pytest.mark.parametrize(
    ("name", "value", "expect"),
    [
        ("ASR_WORKERS", "-1", "ASR_WORKERS=-1"),
        ("FAST_PATH_THRESHOLD", "1.5", "FAST_PATH_THRESHOLD=1.5"),
        ("COMPUTE_DEVICE", "tpu", "COMPUTE_DEVICE=tpu"),
        ("COMPUTE_TYPE", "float8", "COMPUTE_TYPE=float8"),
        ("VOICE_ENROLLMENT_BATCH_SIZE", "lots", "VOICE_ENROLLMENT_BATCH_SIZE=lots"),
        ("GPU_MEMORY_BUDGET", "lots", "GPU_MEMORY_BUDGET=lots"),
        ("GPU_MEMORY_BUDGET", "150%", "GPU_MEMORY_BUDGET=150%"),
    ],
)
def test_bad_value_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expect: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(f"invalid setting {expect}:")
    assert "\n" not in str(info.value)


def test_cli_reports_a_bad_setting_without_a_traceback(tmp_path: Path) -> None:
    env = {"PATH": str(Path(sys.executable).parent), "ASR_WORKERS": "-3", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "voxdock", "models"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ASR_WORKERS=-3" in lines[0]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://ops:hunter2@db.example:5432/vox", "postgresql://ops:***@db.example:5432/vox"),
        ("postgresql://ops@db.example/vox", "postgresql://ops@db.example/vox"),
        ("postgresql://db/vox?user=ops&password=hunter2", "postgresql://db/vox?user=ops&password=***"),
        ("host=db user=ops password=hunter2 dbname=vox", "host=db user=ops password=*** dbname=vox"),
        ("host=db password='hun ter2'", "host=db password=***"),
    ],
)
def test_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_a_bad_database_url_never_shows_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ops:hunter2@db/vox")
    monkeypatch.setenv("ASR_WORKERS", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "hunter2" not in str(info.value)
    s = load_settings(asr_workers=1)
    assert "hunter2" not in repr(s) and "hunter2" not in s.masked_database_url()


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields == documented
    defaults = Settings.model_construct()
    for line in text.splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]+)=(.*)$", line)
        if match:  # uncommented lines must carry the real default
            name, value = match.groups()
            default = getattr(defaults, name.lower())
            parsed = type(default)(value) if isinstance(default, int | float) else value
            assert default == parsed, name


def test_engine_config_carries_the_settings_and_pins_what_was_given() -> None:
    s = load_settings(_env_file=None, asr_workers=3, text_embedding_batch_size=16)
    config = s.engine_config()
    assert (config.asr_workers, config.text_embedding_batch_size, config.vad_workers) == (
        3,
        16,
        s.vad_workers,
    )
    assert config.pinned == {"asr.workers", "text.batch"}
    assert config.cache_dir == s.voxdock_data_dir.expanduser() / "cache"


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("14", BudgetSetting(gib=14.0)),
        ("14GiB", BudgetSetting(gib=14.0)),
        ("0.9", BudgetSetting(share=0.9)),
        ("90%", BudgetSetting(share=0.9)),
        ("", BudgetSetting()),
    ],
)
def test_gpu_memory_budget_reaches_the_engine(
    monkeypatch: pytest.MonkeyPatch, value: str, expect: BudgetSetting
) -> None:
    monkeypatch.setenv("GPU_MEMORY_BUDGET", value)
    assert load_settings(_env_file=None).engine_config().gpu_memory_budget == expect


def test_gpu_memory_budget_says_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_MEMORY_BUDGET", "14MB")
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None)
    assert str(info.value) == (
        "invalid setting GPU_MEMORY_BUDGET=14MB: not a size: give GiB (14, 14GiB, 14G) "
        "or a share of the card (0.9, 90%)"
    )
    monkeypatch.setenv("GPU_MEMORY_BUDGET", "0")
    with pytest.raises(SettingsError, match="GPU_MEMORY_BUDGET=0: must be more than 0"):
        load_settings(_env_file=None)
