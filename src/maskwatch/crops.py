"""Stage between faces and classifier: the one square face crop used in training and at inference."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# The crop reaches this fraction of the face's size beyond the box on every side, so the
# classifier sees the chin and the mask's edges, which YuNet's tight boxes cut off.
DEFAULT_MARGIN = 0.2


def face_crop(
    image: np.ndarray,
    box: Sequence[float],
    size: int,
    margin: float = DEFAULT_MARGIN,
) -> np.ndarray:
    """Cut a square around ``box`` (x1, y1, x2, y2), padded by ``margin`` on each side, resized to ``size``.

    Parts of the square outside the image are filled by repeating the border pixels; a square wholly outside
    it is a ValueError.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left, top = round(cx - side / 2.0), round(cy - side / 2.0)
    side_px = max(1, round(side))
    height, width = image.shape[:2]
    pad_left, pad_top = max(0, -left), max(0, -top)
    pad_right, pad_bottom = max(0, left + side_px - width), max(0, top + side_px - height)
    inside = image[max(0, top): min(height, top + side_px), max(0, left): min(width, left + side_px)]
    if inside.size == 0:
        raise ValueError(f"the box {tuple(box)} lies outside the {width}x{height} image")
    if pad_left or pad_top or pad_right or pad_bottom:
        inside = cv2.copyMakeBorder(inside, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_REPLICATE)
    interpolation = cv2.INTER_AREA if side_px > size else cv2.INTER_LINEAR
    return cv2.resize(inside, (size, size), interpolation=interpolation)


def face_in_crop(size: int, margin: float = DEFAULT_MARGIN) -> tuple[float, float]:
    """Where the face box sits in a square crop of ``size`` px made with ``margin``: (its offset, its side)."""
    side = size / (1 + 2 * margin)
    return (size - side) / 2, side


def whole_image_box(image: np.ndarray) -> tuple[float, float, float, float]:
    """The box to crop when no face was found: the whole image, squared by border padding."""
    height, width = image.shape[:2]
    return (0.0, 0.0, float(width), float(height))
