"""Drawings for video frames: track ids under the face boxes, a counter panel, and face blurring."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from maskwatch.outputs.annotate import draw_results
from maskwatch.results import FaceResult

WHITE = (255, 255, 255)
PANEL = (30, 30, 30)


def _font(image: np.ndarray) -> tuple[float, int]:
    scale = max(image.shape[:2]) / 1000.0
    return max(0.4, 0.6 * scale), max(1, round(2 * scale))


def draw_tracks(image: np.ndarray, faces: Sequence[FaceResult], track_ids: Sequence[int],
                copy: bool = True) -> np.ndarray:
    """``draw_results`` plus each face's track id, inside the bottom-left corner of its box.

    Inside the box, because ``draw_results`` puts the label above the box, or under
    it when the face touches the top of the frame.
    """
    canvas = draw_results(image, faces, copy=copy)
    font_scale, thickness = _font(canvas)
    for face, track_id in zip(faces, track_ids, strict=True):
        x1, _, _, y2 = (round(v) for v in face.box)
        text = f"#{track_id}"
        _, baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        origin = (x1 + 3, y2 - baseline - 1)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness + 2,
                    cv2.LINE_AA)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, WHITE, thickness, cv2.LINE_AA)
    return canvas


def draw_panel(image: np.ndarray, lines: Iterable[str], opacity: float = 0.6) -> np.ndarray:
    """Write ``lines`` on a translucent dark box in the bottom-left corner (in place).

    Translucent so that a face under the panel still shows, with its box and label.
    """
    lines = list(lines)
    if not lines:
        return image
    font_scale, thickness = _font(image)
    sizes = [cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness) for line in lines]
    line_height = max(h + b for (_, h), b in sizes) + 4
    width = min(image.shape[1], max(w for (w, _), _ in sizes) + 10)
    top = max(0, image.shape[0] - line_height * len(lines) - 6)
    region = image[top:, :width]
    region[:] = cv2.addWeighted(region, 1.0 - opacity, np.full_like(region, PANEL), opacity, 0.0)
    for i, line in enumerate(lines):
        cv2.putText(image, line, (5, top + line_height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, WHITE,
                    thickness, cv2.LINE_AA)
    return image


def blur_faces(image: np.ndarray, boxes: Iterable[Sequence[float]], margin: float = 0.25) -> np.ndarray:
    """Make the faces in ``boxes`` unrecognisable (in place), with ``margin`` of the box around each.

    The region is shrunk to a few pixels and blown up again before blurring: the
    detail is gone from the file, not merely smoothed (a Gaussian alone can be
    partly undone by deconvolution).
    """
    height, width = image.shape[:2]
    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box)
        dx, dy = margin * (x2 - x1), margin * (y2 - y1)
        left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
        right, bottom = min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy)))
        if right - left < 2 or bottom - top < 2:
            continue
        region = image[top:bottom, left:right]
        tiny = cv2.resize(region, (max(1, (right - left) // 16), max(1, (bottom - top) // 16)),
                          interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(tiny, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
        sigma = max(1.0, (right - left) / 16)
        image[top:bottom, left:right] = cv2.GaussianBlur(coarse, (0, 0), sigma)
    return image
