"""Run a face net over a photo at one or more scales, and merge what the passes find.

Every face net of this package gives rows in OpenCV's ``FaceDetectorYN`` layout for one image: x, y, w, h,
five landmarks (x, y) and the score. A detector (YuNet, RetinaFace) says how to run its net on one image;
this module chooses the scales, mirrors the enlarged passes if asked, maps the rows back to the photo, merges them and
turns them into ``Face`` objects. So every detector in the registry takes the same options and keeps the
same rules for small faces and face parts.
"""

from __future__ import annotations

import cv2
import numpy as np

from maskwatch.faces.base import Face

ROW_COLUMNS = 15  # x, y, w, h, five landmarks (x, y), score
SCORE = 14
DEFAULT_NMS_THRESHOLD = 0.3
# Images whose long side is shorter than this are enlarged before detection: the nets miss faces under
# ~20 px, and crowd photos are often small.
MIN_LONG_SIDE = 640
MAX_UPSCALE = 4.0
# Larger images are shrunk to this long side, which bounds the cost per image.
MAX_LONG_SIDE = 1920
# An enlarged pass may also run on the mirrored image (``mirror_extra_passes``): the stock YuNet finds some
# masked faces only one way round (scene benchmark, masked faces of 24+ px: recall 0.878 -> 0.901, at about
# twice the cost of a photo). maskwatch's own model does not need it (its file says so: faces/yunet.py).
MIRRORED_LANDMARKS = [1, 0, 2, 4, 3]
# No pass is run on an image larger than this long side: it bounds the cost of the extra passes.
MAX_PASS_LONG_SIDE = 4096
# A 2x pass keeps only faces up to this height (px at the base scale), a 3x pass half of it: larger
# ones are found by the base pass, and what an enlarged pass finds at that size is mostly false
# (a hand, a mission badge: seen on held-out photos and on examples/astronaut.jpg). Measured for the stock
# YuNet; a face model may store its own (``faces/yunet.py``, METADATA_EXTRA_PASS_MAX_FACE).
EXTRA_PASS_MAX_FACE = 128.0
# Faces lower than this (px in the image) are dropped: too small to classify, and mostly texture.
MIN_FACE_PX = 12


def detection_scale(width: int, height: int, min_long_side: int = MIN_LONG_SIDE,
                    max_long_side: int = MAX_LONG_SIDE) -> float:
    """The scale of a photo's first pass: small ones enlarged to ``min_long_side`` (at most 4x), large ones
    shrunk to ``max_long_side``. Detector training rescales its views around it."""
    long_side = max(width, height)
    if long_side < min_long_side:
        return min(min_long_side / long_side, MAX_UPSCALE)
    if long_side > max_long_side:
        return max_long_side / long_side
    return 1.0


class MultiPassDetector:
    """The passes of a face detector; a subclass runs its net on one image in ``_run``.

    ``extra_scales`` adds passes at multiples of the base scale (e.g. ``(2.0,)``) whose boxes are merged with
    non-maximum suppression: slower, finds smaller faces. ``mirror_extra_passes`` runs each of them on the
    mirrored image too; ``extra_pass_max_face`` is the tallest face (px at the base scale) a 2x pass may add.
    """

    def __init__(self, score_threshold: float, nms_threshold: float = DEFAULT_NMS_THRESHOLD,
                 min_long_side: int = MIN_LONG_SIDE, max_long_side: int = MAX_LONG_SIDE,
                 extra_scales: tuple[float, ...] = (), mirror_extra_passes: bool = True,
                 extra_pass_max_face: float = EXTRA_PASS_MAX_FACE) -> None:
        for name, value in (("face score threshold", score_threshold), ("NMS threshold", nms_threshold)):
            if not 0.0 <= value <= 1.0:  # NaN too
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if not extra_pass_max_face > 0:  # NaN too
            raise ValueError(f"the largest face of an extra pass must be positive, got {extra_pass_max_face}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_long_side = min_long_side
        self.max_long_side = max_long_side
        self.extra_scales = tuple(extra_scales)
        self.mirror_extra_passes = mirror_extra_passes
        self.extra_pass_max_face = float(extra_pass_max_face)

    def _run(self, image: np.ndarray) -> np.ndarray:
        """The net's rows (x, y, w, h, landmarks, score) for ``image``, in its pixels, after its own NMS."""
        raise NotImplementedError

    def _after_detect(self, largest_pass_pixels: float) -> None:
        """Called after each photo with the pixel count of its largest pass (a net may free buffers)."""

    def base_scale(self, width: int, height: int) -> float:
        return detection_scale(width, height, self.min_long_side, self.max_long_side)

    def pass_scales(self, width: int, height: int) -> list[float]:
        """The base scale, then each extra pass, clamped to MAX_PASS_LONG_SIDE and to MAX_UPSCALE.

        Enlarging more than 4x invents no detail: a thumbnail already enlarged to 640 px gets no extra pass.
        """
        base = self.base_scale(width, height)
        largest = min(MAX_PASS_LONG_SIDE / max(width, height), MAX_UPSCALE)
        scales = [base]
        for extra in self.extra_scales:
            scale = min(base * extra, largest)
            if scale > scales[-1] * 1.2:  # a pass barely larger than the last finds nothing new
                scales.append(scale)
        return scales

    def detect(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        scales = self.pass_scales(width, height)
        rows = [self._detect_at(image, scales[0])]
        for scale in scales[1:]:
            # An enlarged pass is there for small faces; big "faces" it finds are hands, badges and shelves.
            # The more a pass enlarges, the smaller the faces it is trusted with: the limit at 2x, half at 3x.
            extra = self._detect_at(image, scale)
            if self.mirror_extra_passes:
                extra = np.concatenate([extra, self._detect_mirrored(image, scale)])
            limit = self.extra_pass_max_face / max(1.0, scale / scales[0] - 1.0)
            rows.append(extra[extra[:, 3] * scales[0] <= limit])
        found = np.concatenate(rows)
        found = found[found[:, 3] >= MIN_FACE_PX]
        if len(rows) > 1 and len(found):
            found = self._suppress(found)
        found = drop_face_parts(found[np.argsort(-found[:, SCORE])])
        self._after_detect(max(scales) ** 2 * width * height)
        return [to_face(row, width, height) for row in found]

    def _detect_at(self, image: np.ndarray, scale: float) -> np.ndarray:
        """Run the net on ``image`` resized by ``scale``; rows come back in original pixels."""
        height, width = image.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size != (width, height):
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interpolation)
        faces = self._run(image)
        if faces is None or not len(faces):
            return np.zeros((0, ROW_COLUMNS), np.float32)
        faces = faces.astype(np.float32).copy()
        faces[:, :SCORE] /= np.float32(scale)
        return faces

    def _detect_mirrored(self, image: np.ndarray, scale: float) -> np.ndarray:
        """The net on the mirrored image, rows mapped back: it finds some masked faces only one way round."""
        rows = self._detect_at(np.ascontiguousarray(image[:, ::-1]), scale)
        width = image.shape[1]
        rows[:, 0] = width - rows[:, 0] - rows[:, 2]
        points = rows[:, 4:SCORE].reshape(-1, 5, 2).copy()
        points[:, :, 0] = width - points[:, :, 0]
        rows[:, 4:SCORE] = points[:, MIRRORED_LANDMARKS].reshape(-1, 10)  # the right eye is the left one mirrored
        return rows

    def _suppress(self, rows: np.ndarray) -> np.ndarray:
        return suppress(rows, self.score_threshold, self.nms_threshold)


def suppress(rows: np.ndarray, score_threshold: float, nms_threshold: float) -> np.ndarray:
    """Non-maximum suppression of rows (OpenCV's): the best-scoring row of each overlapping group."""
    boxes = [[float(v) for v in row[:4]] for row in rows]
    keep = cv2.dnn.NMSBoxes(boxes, rows[:, SCORE].tolist(), score_threshold, nms_threshold)
    return rows[np.asarray(keep, dtype=int).reshape(-1)]


def to_face(row: np.ndarray, width: int, height: int) -> Face:
    """A row as a Face, its box clipped to the image."""
    x, y, w, h = (float(v) for v in row[:4])
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(width), x + w), min(float(height), y + h)
    return Face(box=(x1, y1, x2, y2), score=float(row[SCORE]), landmarks=row[4:SCORE].reshape(5, 2).copy())


# Parts of a face that a net, mostly in an enlarged pass, takes for faces of their own: a chin or a
# mask's print inside the face's box, an ear beside it. A real face there would be hidden by the other.
CONTAINED_FRACTION = 0.6
# A face less than half as tall as a better-scoring face, centred within this fraction of that face's
# size around its box, is taken to be one of its parts (measured: ears on held-out portraits).
NEIGHBOUR_REACH = 0.25
PART_SIZE_RATIO = 0.5


def drop_face_parts(rows: np.ndarray) -> np.ndarray:
    """Drop rows (x, y, w, h, ..., score; best score first) that look like parts of a better face."""
    kept: list[np.ndarray] = []
    for row in rows:
        if not any(_is_part_of(row, better) for better in kept):
            kept.append(row)
    return np.array(kept, dtype=np.float32).reshape(-1, rows.shape[1])


def _is_part_of(row: np.ndarray, better: np.ndarray) -> bool:
    x, y, w, h = row[:4]
    bx, by, bw, bh = better[:4]
    overlap_w = min(x + w, bx + bw) - max(x, bx)
    overlap_h = min(y + h, by + bh) - max(y, by)
    if overlap_w > 0 and overlap_h > 0 and overlap_w * overlap_h > CONTAINED_FRACTION * w * h:
        return True
    if h >= PART_SIZE_RATIO * bh:
        return False
    cx, cy = x + w / 2, y + h / 2
    reach_x, reach_y = NEIGHBOUR_REACH * bw, NEIGHBOUR_REACH * bh
    return bool(bx - reach_x <= cx <= bx + bw + reach_x and by - reach_y <= cy <= by + bh + reach_y)
