"""Turn the paths, folders and globs a user types into a list of image files, in a stable order."""

from __future__ import annotations

import glob
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif", ".heic"}


def expand_inputs(arguments: list[str]) -> list[tuple[Path, Path]]:
    """(file, name to write it under) pairs; a path that matches nothing is kept so it is reported."""
    found: list[tuple[Path, Path]] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(p, p.relative_to(path)) for p in files]
        elif path.exists() or not glob.has_magic(argument):
            found.append((path, Path(path.name)))
        else:
            matches = sorted(glob.glob(argument, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            found += [(p, Path(p.name)) for p in files] if files else [(path, Path(path.name))]
    return found
