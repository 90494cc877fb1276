"""Face boxes: one home for the (x1, y1, x2, y2) geometry every stage uses (detector, tracker, evaluation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
BoxLike = Sequence[float] | np.ndarray  # a Box, a list or a numpy row


def width(box: BoxLike) -> float:
    return float(box[2] - box[0])


def height(box: BoxLike) -> float:
    return float(box[3] - box[1])


def area(box: BoxLike) -> float:
    return max(0.0, width(box)) * max(0.0, height(box))


def iou(a: BoxLike, b: BoxLike) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / (area(a) + area(b) - inter))


def clip(box: BoxLike, image_width: float, image_height: float) -> Box:
    """``box`` cut to the image."""
    return (min(max(float(box[0]), 0.0), image_width), min(max(float(box[1]), 0.0), image_height),
            min(max(float(box[2]), 0.0), image_width), min(max(float(box[3]), 0.0), image_height))


class HasBox:
    """Width and height for anything with a ``box`` (a detected face, a classified face)."""

    box: Box

    @property
    def width(self) -> float:
        return width(self.box)

    @property
    def height(self) -> float:
        return height(self.box)
