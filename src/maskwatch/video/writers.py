"""Where annotated frames go: a video file and a window on screen."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

# Codecs every opencv-python wheel can write without extra libraries.
FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class OutputError(RuntimeError):
    """An output that cannot be written or shown; the message says why."""


class VideoFileWriter:
    """Write frames to ``path`` at ``fps``; the frame size is fixed by the first frame.

    The encoders want an even width and height and would cut an odd one's last column or row (where a
    face at the edge and its label may be), so an odd frame gets one black column or row added instead.
    ``close`` must run for the file to be playable (an MP4 gets its index then):
    the watch loop calls it on every way out, Ctrl-C included.
    """

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC_BY_SUFFIX:
            raise OutputError(f"unsupported video file type {suffix or '(none)'!r} for {self.path}; "
                              f"use one of {', '.join(FOURCC_BY_SUFFIX)}")
        if not self.path.parent.is_dir():
            raise OutputError(f"folder of {self.path} does not exist")
        self.fourcc = FOURCC_BY_SUFFIX[suffix]
        self.fps = fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # the frames' (width, height); the file's is made even

    def open(self, size: tuple[int, int]) -> None:
        """Open the file for frames of ``size`` (width, height) now, so that a folder or codec that cannot
        be written fails at start rather than at the first frame; OutputError if it cannot."""
        if self._writer is None:
            self._open_size(size)

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self._open(image)
        assert self._size is not None and self._writer is not None
        width, height = self._size
        if (image.shape[1], image.shape[0]) != self._size:  # a stream that changed resolution midway
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        if width % 2 or height % 2:
            image = cv2.copyMakeBorder(image, 0, height % 2, 0, width % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        self._writer.write(image)
        self.frames += 1

    def _open(self, image: np.ndarray) -> None:
        self._open_size((image.shape[1], image.shape[0]))

    def _open_size(self, size: tuple[int, int]) -> None:
        even = (size[0] + size[0] % 2, size[1] + size[1] % 2)
        try:
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*self.fourcc), self.fps, even)
        except cv2.error as exc:
            raise OutputError(f"cannot write video to {self.path}: {exc}") from None
        if not writer.isOpened():
            writer.release()
            raise OutputError(f"cannot write video to {self.path} (folder not writable, or no {self.fourcc} "
                              "encoder in this OpenCV build)")
        self._writer, self._size = writer, size

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def check_display() -> None:
    """Raise OutputError unless OpenCV can open a window here."""
    gui = cv2.getBuildInformation().split("GUI:", 1)[-1].split("\n", 1)[0].strip()
    if gui.upper().startswith("NONE"):
        raise OutputError("--show needs OpenCV with a GUI, but this one is headless (opencv-python-headless); "
                          "swap it for opencv-python (pip uninstall opencv-python-headless, then pip install "
                          "opencv-python: the two cannot share an environment), or use --out FILE to write the "
                          "annotated video")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise OutputError("--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set")


class WindowDisplay:
    """Show frames in a window; ``show`` returns False once the user pressed q or Esc."""

    def __init__(self, title: str) -> None:
        check_display()
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyWindow(self.title)
