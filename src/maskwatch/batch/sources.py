"""What ``maskwatch batch`` reads: folders, globs, list files and videos, turned into units of work.

Every output row has a key, ``(source, frame)``: the absolute path of the input and, for a video, the index
of the sampled frame (``None`` for a photo). Resuming compares these keys with the rows already written, so
the plan must be the same from run to run: the same sources give the same items in the same order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from maskwatch.inputs import find_inputs, folder_images, printable_name, utf8_name_problem

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".3gp"})
# A source with one of these suffixes is a list of sources, one a line ("@FILE" also marks one).
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
# Sampled frames of one video handed to a worker as one item: enough to amortise opening the file and the
# seek to the first frame, few enough that a long video is spread over the workers.
VIDEO_FRAMES_PER_ITEM = 8

Key = tuple[str, int | None]  # (absolute source path, frame index or None for a photo)


class SourceError(ValueError):
    """A source argument that cannot be used at all (a missing list file)."""


@dataclass
class WorkItem:
    """One unit of work for a worker: a photo, or some sampled frames of one video."""

    kind: str  # "image" or "video"
    file: str  # the path as the user's arguments spell it: ``file`` in the results, as in ``maskwatch detect``
    source: str  # absolute path: the resume key
    frames: list[int] = field(default_factory=list)  # video: frame indices to analyse, ascending
    fps: float = 0.0  # video: frames per second, for the frame times
    error: str | None = None  # known before any work (a video that cannot be opened): one error row

    def keys(self) -> list[Key]:
        if self.kind == "image" or not self.frames:
            return [(self.source, None)]
        return [(self.source, frame) for frame in self.frames]

    def to_row(self) -> dict:
        """The item as a plain dict (what Ray Data carries to the workers)."""
        return {"kind": self.kind, "file": self.file, "source": self.source, "frames": list(self.frames),
                "fps": float(self.fps), "error": self.error}


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def read_list_file(path: Path) -> list[str]:
    """The sources in a list file: one a line; blank lines and lines starting with # are skipped.

    Relative paths are taken from the current folder, as ``tar -T`` and ``find > list`` expect.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read list file {path}: {exc.strerror or exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def expand_files(arguments: Iterable[str]) -> list[tuple[Path, str | None]]:
    """Every file the arguments name, in a stable order, each once (by absolute path), with the reason it
    cannot be read when that is known already.

    Folders give their photos and videos (recursively); globs and plain paths go through
    ``maskwatch.inputs.find_inputs``, so a path that matches nothing is kept and becomes an error row.
    """
    files: list[tuple[Path, str | None]] = []
    seen: set[str] = set()
    for path, error in _expand(arguments, nested=False):
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            files.append((path, error))
    return files


def _expand(arguments: Iterable[str], nested: bool) -> Iterator[tuple[Path, str | None]]:
    for argument in arguments:
        is_list = argument.startswith("@") or Path(argument).suffix.lower() in LIST_SUFFIXES
        if is_list and not nested:
            list_path = Path(argument[1:] if argument.startswith("@") else argument)
            if not list_path.is_file():
                raise SourceError(f"no such list file: {list_path}")
            yield from _expand(read_list_file(list_path), nested=True)
        elif argument and Path(argument).is_dir():  # Path("") is the current folder: find_inputs refuses it
            found = sorted(folder_images(Path(argument)) + folder_videos(Path(argument)))
            yield from ((path, None) for path in found)
            if not found:
                yield Path(argument), f"no images or videos in folder {argument}"
        else:
            yield from ((found.path, found.error) for found in find_inputs([argument]))


def folder_videos(folder: Path) -> list[Path]:
    """The video files under ``folder`` (by name: a broken link is listed and reported); sub-folders that
    cannot be read are skipped (as for photos)."""
    return [Path(root) / name for root, _dirs, names in os.walk(folder) for name in names if is_video(Path(name))]


def plan(files: Iterable[tuple[Path, str | None]], every_seconds: float,
         frames_per_item: int = VIDEO_FRAMES_PER_ITEM) -> list[WorkItem]:
    """Work items for ``files`` (from ``expand_files``): one per photo; for each video, its frames every
    ``every_seconds``, in chunks. Videos are probed here (frame count and rate, no decoding) so that each
    sampled frame has its own key.
    """
    items: list[WorkItem] = []
    for path, known_error in files:
        source = os.path.abspath(path)
        if known_error is None and (problem := utf8_name_problem(source)):  # the rows keep names as UTF-8 text
            items.append(WorkItem("image", printable_name(path), printable_name(source), error=problem))
            continue
        if known_error is not None or not is_video(path):
            items.append(WorkItem("image", str(path), source, error=known_error))
            continue
        frames, fps, error = sample_frames(path, every_seconds)
        if error is not None:
            items.append(WorkItem("video", str(path), source, error=error))
            continue
        for start in range(0, len(frames), frames_per_item):
            items.append(WorkItem("video", str(path), source, frames[start:start + frames_per_item], fps))
    return items


def sample_frames(path: Path, every_seconds: float) -> tuple[list[int], float, str | None]:
    """The frame indices to analyse in the video at ``path``, its frame rate, or why it cannot be read."""
    import cv2

    if not path.is_file():
        return [], 0.0, f"not a regular file: {path}" if path.exists() else f"no such file: {path}"
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            return [], 0.0, "cannot open the video (not a video, or a codec OpenCV lacks)"
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        capture.release()
    if not (0.5 <= fps <= 1000.0) or count <= 0:
        return [], 0.0, f"the video gives no usable frame rate ({fps:g}) or frame count ({count})"
    step = max(every_seconds * fps, 1.0)
    frames = sorted({round(k * step) for k in range(math.ceil(count / step)) if round(k * step) < count})
    return frames, fps, None


def pending_items(items: list[WorkItem], done: Collection[Key]) -> list[WorkItem]:
    """``items`` without the keys already written; a video chunk keeps only its frames still to do."""
    left: list[WorkItem] = []
    for item in items:
        if item.kind == "video" and item.frames:
            frames = [frame for frame in item.frames if (item.source, frame) not in done]
            if frames:
                left.append(WorkItem(item.kind, item.file, item.source, frames, item.fps))
        elif (item.source, None) not in done:
            left.append(item)
    return left


def count_keys(items: Iterable[WorkItem]) -> int:
    return sum(len(item.keys()) for item in items)
