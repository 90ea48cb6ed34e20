"""Console preferences remembered between runs (the theme)."""

from __future__ import annotations

import json
from pathlib import Path

import platformdirs


def default_prefs_path() -> Path:
    return Path(platformdirs.user_config_dir("voxdock", appauthor=False)) / "console.json"


def load_prefs(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_prefs(path: Path, prefs: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(prefs, indent=2) + "\n")
    except OSError:
        pass  # a read-only home is no reason to stop the console
