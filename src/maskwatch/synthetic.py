"""Paste real faces onto backgrounds at chosen sizes, with known boxes.

Used by the scene benchmark, the speed benchmark and the video tests: cameras
see crowds of small faces, and the training folders hold mostly portraits.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from maskwatch.boxes import iou

__all__ = ["face_patch", "free_spot", "iou", "paste"]


def face_patch(image: np.ndarray, box: Sequence[float], height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face with some head around it, scaled so the face box is ``height`` px high.

    Returns the patch, a feathered elliptical alpha (the face itself fully opaque),
    and the face box inside the patch.
    """
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    pad_x, pad_y = 0.35 * w, 0.35 * h
    left, top = max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y))
    right, bottom = min(image.shape[1], int(x2 + pad_x)), min(image.shape[0], int(y2 + pad_y))
    region = image[top:bottom, left:right]
    scale = height / h
    size = (max(2, round(region.shape[1] * scale)), max(2, round(region.shape[0] * scale)))
    patch = cv2.resize(region, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    alpha = np.zeros(patch.shape[:2], np.float32)
    cv2.ellipse(alpha, (size[0] // 2, size[1] // 2), (size[0] // 2, size[1] // 2), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, 0.08 * size[0]))
    face_box = np.array([(x1 - left) * scale, (y1 - top) * scale, (x2 - left) * scale, (y2 - top) * scale],
                        np.float32)
    fx1, fy1, fx2, fy2 = face_box
    alpha[int(fy1):int(np.ceil(fy2)), int(fx1):int(np.ceil(fx2))] = 1.0
    return patch, alpha, face_box


def paste(scene: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Blend ``patch`` into ``scene`` (in place) with its top-left corner at (x, y); clipped at the edges."""
    h, w = patch.shape[:2]
    sx1, sy1 = max(0, x), max(0, y)
    sx2, sy2 = min(scene.shape[1], x + w), min(scene.shape[0], y + h)
    if sx2 <= sx1 or sy2 <= sy1:
        return
    px1, py1 = sx1 - x, sy1 - y
    a = alpha[py1:py1 + sy2 - sy1, px1:px1 + sx2 - sx1, None]
    p = patch[py1:py1 + sy2 - sy1, px1:px1 + sx2 - sx1].astype(np.float32)
    region = scene[sy1:sy2, sx1:sx2].astype(np.float32)
    scene[sy1:sy2, sx1:sx2] = (a * p + (1 - a) * region).astype(np.uint8)


def free_spot(taken: list[np.ndarray], w: int, h: int, width: int, height: int,
              rng: np.random.Generator, tries: int = 50) -> tuple[int, int] | None:
    """A top-left corner where a w x h box fits in the frame without touching the ``taken`` boxes."""
    if w >= width or h >= height:
        return None
    for _ in range(tries):
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        candidate = (x, y, x + w, y + h)
        if all(iou(candidate, b) == 0 for b in taken):
            return x, y
    return None
