"""Turn the paths, folders and globs a user types into a list of image files, in a stable order."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from maskwatch.images import EMPTY_PATH_ERROR, IMAGE_SUFFIXES, url_problem


@dataclass(frozen=True)
class Input:
    """One thing to analyse: a file, the name to write it under, and why it cannot be read, if known already."""

    path: Path
    name: Path
    error: str | None = None


def expand_inputs(arguments: list[str]) -> list[tuple[Path, Path]]:
    """(file, name to write it under) pairs; a path that matches nothing is kept so it is reported."""
    return [(found.path, found.name) for found in find_inputs(arguments)]


def find_inputs(arguments: list[str]) -> list[Input]:
    """Every argument gives at least one Input: a path that cannot be looked at (a folder without permission,
    a name too long), an empty folder and a glob that matches nothing come back with their ``error``, so the
    batch goes on and reports them."""
    found: list[Input] = []
    for argument in arguments:
        if not argument:  # Path("") is ".": an unset shell variable must not analyse the current folder
            found.append(Input(Path(argument), Path(argument), EMPTY_PATH_ERROR))
            continue
        path = Path(argument)
        if problem := url_problem(argument):
            found.append(Input(path, Path(path.name), problem))
            continue
        try:
            is_dir, exists = path.is_dir(), path.exists()
        except OSError as exc:  # is_dir() raises for EACCES and ENAMETOOLONG, not only for a broken path
            found.append(Input(path, Path(path.name), f"cannot read {path}: {exc.strerror or exc}"))
            continue
        if is_dir:
            files = folder_images(path)
            found += [Input(p, p.relative_to(path)) for p in files]
            if not files:
                found.append(Input(path, Path(path.name), f"no images in folder {path} "
                                                          f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})"))
        elif exists or not glob.has_magic(argument):
            found.append(Input(path, Path(path.name)))
        else:
            matches = sorted(glob.glob(argument, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            found += ([Input(p, Path(p.name)) for p in files] if files
                      else [Input(path, Path(path.name), f"no file matches {printable_name(argument)}")])
    return found


def folder_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` (by name), sorted; sub-folders that cannot be read are skipped."""
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):  # os.walk skips unreadable sub-folders instead of raising
        dirs.sort()
        for name in names:
            candidate = Path(root) / name
            # Every name, not only regular files: a broken link or a FIFO named like an image is listed, so
            # reading it reports it by name instead of the batch passing over it in silence.
            if candidate.suffix.lower() in IMAGE_SUFFIXES:
                files.append(candidate)
    return sorted(files)


def utf8_name_problem(path: Path | str) -> str | None:
    """Why this file name cannot be used where it must be UTF-8 text, or None. A name that is not valid UTF-8
    (bytes from another system, which Python keeps as surrogate escapes) makes ``cv2.VideoCapture`` crash the
    whole process instead of failing, and cannot be stored in the batch results (Arrow strings), so a video,
    or any input of a batch, named like that is refused by name first. ``maskwatch detect`` reads photos with
    Pillow and writes ``printable_name``, so it does not need this."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return f"the file name is not valid UTF-8 (rename it): {printable_name(path)}"
    return None


def printable_name(path: str | os.PathLike) -> str:
    """``path`` as valid UTF-8 text: bytes that are not UTF-8 (a file name from another system) become
    backslash escapes, e.g. ``bad\\xffname.jpg``, so that a JSON line or a terminal never gets a raw byte."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
