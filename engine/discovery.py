"""Finding the media files under the paths an operator gives, and fingerprinting their content."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from voxdock.storage.jobs import FileEntry

MEDIA_SUFFIXES = frozenset(
    [
        ".wav",
        ".wave",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
        ".wma",
        ".aif",
        ".aiff",
        ".amr",
        ".ac3",
        ".mka",
        ".caf",
        ".au",
        ".spx",
        ".mp4",
        ".m4v",
        ".mkv",
        ".mov",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".3gp",
        ".wmv",
        ".flv",
        ".ogv",
    ]
)


@dataclass(frozen=True)
class Discovered:
    files: list[FileEntry]
    ignored: int  # files under given directories that are not media by their suffix


def content_hash(path: Path) -> str | None:
    """sha256 of the file's bytes, or None when it cannot be read (decode then reports why)."""
    try:
        with path.open("rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def _walk(root: Path) -> Iterable[Path]:
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            yield Path(folder) / name


def discover(paths: Iterable[str | Path], *, hash_workers: int = 4) -> Discovered:
    """Media files under `paths`: a directory contributes its media files (by suffix); a path given
    directly is always taken, even if missing or odd, so that its failure is recorded, not lost."""
    chosen: list[Path] = []
    ignored = 0
    for raw in paths:
        path = Path(raw).expanduser().absolute()
        if path.is_dir():
            for file in _walk(path):
                if file.suffix.lower() in MEDIA_SUFFIXES:
                    chosen.append(file)
                else:
                    ignored += 1
        else:
            chosen.append(path)
    unique = list(dict.fromkeys(chosen))

    def entry(path: Path) -> FileEntry:
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        return FileEntry(path=str(path), size_bytes=size, content_hash=content_hash(path))

    with ThreadPoolExecutor(max_workers=max(1, hash_workers)) as pool:
        files = list(pool.map(entry, unique))
    return Discovered(files=files, ignored=ignored)
