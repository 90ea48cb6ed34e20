"""The layers depend one way: tui -> engine -> storage. An import scan of every module (top-level
and inside functions) fails the suite when a layer reaches up or past its neighbour."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package directory -> module prefixes it must not import
FORBIDDEN = {
    "storage": ("voxdock.engine", "voxdock.tui", "voxdock.cli", "voxdock.headless", "voxdock.settings"),
    "engine": ("voxdock.tui", "voxdock.cli", "voxdock.headless", "voxdock.settings"),
    "tui": ("voxdock.storage", "voxdock.cli", "voxdock.headless"),
}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def violations() -> list[str]:
    broken = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in sorted(imports_of(path)):
                if module.startswith(banned):
                    broken.append(f"{path.relative_to(ROOT)} imports {module}")
    return broken


def test_layers_depend_one_way() -> None:
    assert violations() == []


def test_the_scan_sees_a_violation(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def late():\n    from voxdock.tui.app import VoxdockConsole\n")
    assert imports_of(module) == {"voxdock.tui.app"}
