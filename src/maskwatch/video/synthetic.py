"""Synthetic videos with known ground truth: real face photos moving over a background.

The video tests and ``benchmarks/video.py`` build their clips with this: each
``Walker`` is one person (one real face) who enters at a frame, moves in a
straight line, and leaves, so every frame's true boxes are known.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskwatch.faces import FaceDetector
from maskwatch.images import load_image
from maskwatch.synthetic import face_patch, paste


@dataclass
class FacePatch:
    """A real face cut from a photo, ready to paste: pixels, alpha, the face box in the patch, its label."""

    patch: np.ndarray
    alpha: np.ndarray
    box: np.ndarray  # x1, y1, x2, y2 inside the patch
    label: str


def cut_face(photo: str | os.PathLike, detector: FaceDetector, height: int, label: str) -> FacePatch:
    """The best face of ``photo`` scaled so the face box is ``height`` px high."""
    image = load_image(photo)
    faces = detector.detect(image)
    if not faces:
        raise ValueError(f"no face found in {photo}")
    patch, alpha, box = face_patch(image, faces[0].box, height)
    return FacePatch(patch, alpha, box, label)


@dataclass
class Walker:
    """One person: visible from frame ``start`` up to (not including) ``end``, moving ``start_xy`` -> ``end_xy``."""

    face: FacePatch
    start: int
    end: int
    start_xy: tuple[float, float]  # patch top-left at ``start``
    end_xy: tuple[float, float]  # patch top-left at ``end - 1``

    def position(self, frame: int) -> tuple[int, int] | None:
        if not self.start <= frame < self.end:
            return None
        t = 0.0 if self.end - self.start <= 1 else (frame - self.start) / (self.end - 1 - self.start)
        x = self.start_xy[0] + t * (self.end_xy[0] - self.start_xy[0])
        y = self.start_xy[1] + t * (self.end_xy[1] - self.start_xy[1])
        return round(x), round(y)

    def box(self, frame: int) -> tuple[float, float, float, float] | None:
        """The true face box at ``frame``, or None when the person is not in view."""
        xy = self.position(frame)
        if xy is None:
            return None
        x1, y1, x2, y2 = self.face.box
        return (x1 + xy[0], y1 + xy[1], x2 + xy[0], y2 + xy[1])


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A plain, faceless backdrop: a soft colour gradient with a little sensor-like noise."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    base = 90 + 60 * xs * np.array([1.0, 0.6, 0.3], np.float32) + 50 * ys * np.array([0.2, 0.5, 1.0], np.float32)
    noisy = base + rng.normal(0.0, 3.0, (height, width, 3)).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def render(backdrop: np.ndarray, walkers: Sequence[Walker], frame: int) -> np.ndarray:
    """Frame number ``frame`` of the scene."""
    image = backdrop.copy()
    for walker in walkers:
        xy = walker.position(frame)
        if xy is not None:
            paste(image, walker.face.patch, walker.face.alpha, *xy)
    return image


def frames(backdrop: np.ndarray, walkers: Sequence[Walker], count: int) -> Iterator[np.ndarray]:
    for frame in range(count):
        yield render(backdrop, walkers, frame)


def write_video(path: str | os.PathLike, images: Iterator[np.ndarray] | Sequence[np.ndarray],
                fps: float = 30.0) -> int:
    """Write ``images`` to ``path`` (MJPG for .avi, mp4v otherwise); return the frame count."""
    path = Path(path)
    writer: cv2.VideoWriter | None = None
    count = 0
    try:
        for image in images:
            if writer is None:
                fourcc = cv2.VideoWriter.fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
                writer = cv2.VideoWriter(str(path), fourcc, fps, (image.shape[1], image.shape[0]))
                if not writer.isOpened():
                    raise OSError(f"cannot write {path}")
            writer.write(image)
            count += 1
    finally:
        if writer is not None:
            writer.release()
    return count
