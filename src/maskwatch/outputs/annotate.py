"""Draw face results onto an image."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from maskwatch.results import FaceResult

GREEN = (60, 180, 60)  # BGR
RED = (40, 40, 220)


def draw_results(image: np.ndarray, faces: Iterable[FaceResult], copy: bool = True) -> np.ndarray:
    """Box each face, green with a mask and red without, and write the label and its probability."""
    canvas = image.copy() if copy else image
    scale = max(canvas.shape[:2]) / 1000.0
    thickness = max(1, round(2 * scale))
    font_scale = max(0.4, 0.6 * scale)
    for face in faces:
        color = GREEN if face.has_mask else RED
        x1, y1, x2, y2 = (round(v) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        confidence = face.mask_probability if face.has_mask else 1.0 - face.mask_probability
        text = f"{'mask' if face.has_mask else 'no mask'} {confidence:.0%}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y2
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 4, top + th + baseline + 2), color, cv2.FILLED)
        cv2.putText(canvas, text, (x1 + 2, top + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return canvas
