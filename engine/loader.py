"""Loading the models a plan names, on the configured device, offline."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from voxdock.engine.asr import AsrModel
from voxdock.engine.models import ModelPlan
from voxdock.engine.precision import use_full_float32
from voxdock.engine.text_embed import TextEncoder
from voxdock.engine.vad import run_on as run_vad_on
from voxdock.engine.voice import VoiceEncoder

log = logging.getLogger(__name__)

ASR_PARALLEL_MAX = 4

# Nothing may reach a model hub at run time, and progress bars would scribble over the console.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)


def resolve_device(setting: str) -> str:
    if setting in ("cpu", "cuda"):
        return setting
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


# On a GPU, the first of these that CTranslate2 supports on the card: float16 where it is fast (compute
# capability 7+), else what it can do (a Pascal card refuses float16, and the engine would not start).
CUDA_COMPUTE_TYPES = ("float16", "int8_float16", "int8_float32", "float32")


def resolve_compute_type(setting: str, device: str) -> str:
    if setting != "auto":
        return setting
    if device != "cuda":
        return "int8"
    try:
        import ctranslate2

        supported = set(ctranslate2.get_supported_compute_types("cuda"))
    except Exception:  # no CUDA build or no device: CTranslate2 will say so when the model loads
        return CUDA_COMPUTE_TYPES[0]
    return next((choice for choice in CUDA_COMPUTE_TYPES if choice in supported), "float32")


@dataclass
class LoadedModels:
    device: str
    compute_type: str
    asr: AsrModel
    voice: VoiceEncoder
    text: TextEncoder
    names: dict[str, str] = field(default_factory=dict)


def _quiet_transformers() -> None:
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # pragma: no cover - best effort
        pass


def load_models(
    plan: ModelPlan,
    *,
    device_setting: str,
    compute_type_setting: str,
    asr_workers: int,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> LoadedModels:
    """Load ASR, voice and text models (diarizers are built by the engine around the voice model)."""
    say = progress or (lambda _m: None)
    missing = plan.missing()
    if missing:
        from voxdock.engine.models import ModelNotFound

        raise ModelNotFound("; ".join(f"{m.stage} model {m.name!r} not found: {m.note}" for m in missing))
    device = resolve_device(device_setting)
    compute_type = resolve_compute_type(compute_type_setting, device)
    if device == "cuda":  # no TF32: the same numbers as on the CPU, whatever runs at the same time
        use_full_float32()
    _quiet_transformers()
    cpus = os.cpu_count() or 1

    say(f"loading ASR {plan.asr.name} ({plan.asr.origin}) on {device}/{compute_type}")
    asr = AsrModel(
        plan.asr.require(),
        device=device,
        compute_type=compute_type,
        # CTranslate2 threads per transcription, and how many transcriptions it runs side by side
        # (replicas share the weights); ASR_WORKERS can be raised at run time up to that many.
        cpu_threads=cpus,
        workers=max(asr_workers, ASR_PARALLEL_MAX),
    )
    say(f"VAD {plan.vad.name} on {run_vad_on(device)}")
    say(f"loading voice model {plan.voice.name} ({plan.voice.origin})")
    voice = VoiceEncoder(plan.voice.require(), device=device, onnx_cache=cache_dir)
    say(f"loading text model {plan.text.name} ({plan.text.origin})")
    text = TextEncoder(plan.text.require(), device=device)
    names = {
        "asr": plan.asr.name,
        "vad": plan.vad.name,
        "diarization": plan.diarization.name,
        "voice": plan.voice.name,
        "text": plan.text.name,
    }
    return LoadedModels(
        device=device, compute_type=compute_type, asr=asr, voice=voice, text=text, names=names
    )
