"""The engine's own configuration: what it needs to run, whoever configures it (the command line's
settings, a test, a benchmark). Defaults live with the settings that fill it, not here."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

from voxdock.engine.vram import BudgetSetting

# The bounds of the live knobs, wherever they are set (settings, console, engine API).
MAX_WORKERS = 64
MAX_BATCH_SIZE = 4096

# Settings whose value, when given rather than defaulted, pins a knob: self-tuning leaves it as given.
KNOB_SETTINGS = {
    "decode_workers": "decode.workers",
    "vad_workers": "vad.workers",
    "asr_workers": "asr.workers",
    "diarization_workers": "diarize.workers",
    "voice_workers": "voice.workers",
    "text_workers": "text.workers",
    "storage_workers": "store.workers",
    "asr_batch_size": "asr.batch",
    "diarization_batch_size": "diarize.batch",
    "voice_enrollment_batch_size": "voice.batch",
    "text_embedding_batch_size": "text.batch",
}


@dataclass(frozen=True)
class EngineConfig:
    voxdock_data_dir: Path  # the model cache (ONNX exports) lives under it
    node_name: str | None
    job_lease_seconds: float
    job_max_attempts: int
    compute_device: str  # auto, cpu or cuda
    compute_type: str
    decode_workers: int
    vad_workers: int
    asr_workers: int
    asr_batch_size: int
    asr_beam_size: int
    diarization_workers: int
    diarization_batch_size: int
    voice_workers: int
    voice_enrollment_batch_size: int
    text_workers: int
    text_embedding_batch_size: int
    storage_workers: int
    fast_path_threshold: float | None  # None: the calibrated default
    in_flight_audio_gb: float | None  # None: a quarter of the host's memory
    auto_tune: bool
    # GPU_MEMORY_BUDGET, resolved to bytes once the device is known (engine/vram.py)
    gpu_memory_budget: BudgetSetting = field(default_factory=BudgetSetting)
    pinned: frozenset[str] = frozenset()  # knobs given by the operator ("asr.workers", ...)

    @property
    def cache_dir(self) -> Path:
        return self.voxdock_data_dir.expanduser() / "cache"

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "pinned"]


class ConfigSource(Protocol):
    """Anything that can give the engine its configuration (the command line's settings do)."""

    def engine_config(self) -> EngineConfig: ...
