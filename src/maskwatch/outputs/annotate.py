"""Draw face results onto an image."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from maskwatch.images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from maskwatch.labels import INCORRECT_MASK, WITH_MASK, WITHOUT_MASK
from maskwatch.results import FaceResult

GREEN = (60, 180, 60)  # BGR
RED = (40, 40, 220)
ORANGE = (0, 140, 255)
# Each label's box colour and caption (the web page uses the same colours in app.js / style.css).
STYLE = {WITH_MASK: (GREEN, "mask"), WITHOUT_MASK: (RED, "no mask"), INCORRECT_MASK: (ORANGE, "mask below nose")}


def label_confidence(face: FaceResult) -> float:
    """The probability of the face's own label as it is meant: P(with_mask) or its complement for two-label
    results (two-class mode's ``without_mask`` holds the masks below the nose too), else P(label)."""
    if face.label in face.probabilities and not face.two_class:
        return float(face.probabilities[face.label])
    return face.mask_probability if face.has_mask else 1.0 - face.mask_probability


def draw_results(image: ImageInput, faces: Iterable[FaceResult], copy: bool = True,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Box each face (green: mask, red: no mask, orange: mask below the nose); write the label and its probability.

    ``image``: the BGR array ``analyze`` returned (drawn on a copy, or in place with ``copy=False``), or
    anything ``detect`` reads (a path, bytes, a Pillow image, another array), decoded upright as ``detect``
    decoded it (within ``max_pixels``, as the detector's limit) into a new array.
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        canvas = image.copy() if copy else image
    elif not copy:
        raise ValueError("copy=False draws in place, on a BGR uint8 (H, W, 3) array: this image must be "
                         "converted first, into a new array (copy=True)")
    else:
        canvas = load_image(image, max_pixels)
    scale = max(canvas.shape[:2]) / 1000.0
    thickness = max(1, round(2 * scale))
    font_scale = max(0.4, 0.6 * scale)
    for face in faces:
        color, caption = STYLE.get(face.label, (RED, face.label))
        x1, y1, x2, y2 = (round(v) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        text = f"{caption} {label_confidence(face):.0%}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y2
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 4, top + th + baseline + 2), color, cv2.FILLED)
        cv2.putText(canvas, text, (x1 + 2, top + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return canvas
