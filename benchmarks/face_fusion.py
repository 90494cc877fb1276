"""Can a second look cut the shipped face model's false faces? Three ways, measured side by side.

The shipped face model gives a false face in more face-free photos than the stock YuNet's old three passes
(MODEL_CARD.md, the face detector's card). Each way below adds one cheap second look to its one pass:

- ``mirrored``: the mirrored photo as a second pass; a face seen both ways keeps the mean of its two scores
  and boxes, a face seen one way keeps half its score (a false face is often seen one way round).
- ``stock union``: the stock model's one pass beside it, both sets of boxes merged by non-maximum suppression.
- ``stock check``: a face under 0.7 is kept only where the stock model sees a face too (score >= 0.2,
  IoU >= 0.3).
- ``mirrored check``: the same check by the shipped model's own pass over the mirrored photo (no second
  model to ship); faces of 0.7 and more, most portraits among them, are kept unchecked.

For each, at several face score thresholds: recall of masked, bare and badly masked faces on `mask-scenes`
val (faces of 16 px and up, IoU >= 0.5), false faces per photo, face AP@0.5, and the face-free photos with a
false face (``face_threshold.py``'s 72).

    python benchmarks/face_fusion.py ../shared/datasets/mask-scenes [--portraits ../shared/datasets/face-mask]

About a minute on 2 cores, and a minute or two per way with ``--portraits`` (the face-mask photos in which a
face is found at 0.5: bare portraits must not be lost). The ms column includes the fusion, written in Python.

The stock model comes from $MASKWATCH_FACE_MODEL (or the cache / a verified download).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from face_threshold import face_free_images

from maskwatch.boxes import iou
from maskwatch.evaluation.detector import sweep_thresholds
from maskwatch.faces import Face, YuNetDetector
from maskwatch.faces.passes import MIN_FACE_PX, SCORE, drop_face_parts, suppress, to_face
from maskwatch.images import ImageError, load_image
from maskwatch.training.data import scan_dataset

THRESHOLDS = [0.4, 0.45, 0.5, 0.55, 0.6]
LOW = 0.15  # what each look keeps before fusing: below every threshold above
MATCH_IOU = 0.5  # a face seen both ways round
SURE = 0.7  # the checks: faces this sure need no check
SEES = 0.2  # the second look's score that counts as seeing a face (checks)
CHECK_IOU = 0.3


def _box(row: np.ndarray) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in row[:4])
    return x, y, x + w, y + h


Look = Callable[["Fused", np.ndarray, float], np.ndarray]  # (detector, image, scale) -> the second look's rows
Fuse = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (first, second) rows -> rows


class Fused(YuNetDetector):
    """The shipped model's one pass and a second look, fused."""

    def __init__(self, look: Look, fuse: Fuse) -> None:
        super().__init__(extra_scales=())
        self.look, self.fuse = look, fuse
        self.stock = YuNetDetector("stock", extra_scales=(), score_threshold=LOW) if look is stock_look else None

    def detect(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        scale = self.base_scale(width, height)
        keep, self.score_threshold = self.score_threshold, LOW
        try:
            first, second = self._detect_at(image, scale), self.look(self, image, scale)
        finally:
            self.score_threshold = keep
        rows = self.fuse(first, second)
        rows = rows[(rows[:, 3] >= MIN_FACE_PX) & (rows[:, SCORE] >= self.score_threshold)]
        if len(rows):
            rows = suppress(rows, self.score_threshold, self.nms_threshold)
        rows = drop_face_parts(rows[np.argsort(-rows[:, SCORE])])
        return [to_face(row, width, height) for row in rows]


def mirrored_look(detector: Fused, image: np.ndarray, scale: float) -> np.ndarray:
    return detector._detect_mirrored(image, scale)


def stock_look(detector: Fused, image: np.ndarray, scale: float) -> np.ndarray:
    assert detector.stock is not None
    return detector.stock._detect_at(image, detector.stock.base_scale(image.shape[1], image.shape[0]))


def mean_of_both(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    rows, used = [], np.zeros(len(second), bool)
    for row in first[np.argsort(-first[:, SCORE])]:
        overlaps = [iou(_box(row), _box(other)) if not used[j] else 0.0 for j, other in enumerate(second)]
        j = int(np.argmax(overlaps)) if overlaps else -1
        if j >= 0 and overlaps[j] >= MATCH_IOU:
            used[j] = True
            a, b = row[SCORE], second[j, SCORE]
            fused = (row * a + second[j] * b) / (a + b)
            fused[SCORE] = (a + b) / 2
        else:
            fused = row.copy()
            fused[SCORE] /= 2
        rows.append(fused)
    for row in second[~used]:
        alone = row.copy()
        alone[SCORE] /= 2
        rows.append(alone)
    return np.array(rows, np.float32).reshape(-1, first.shape[1])


def union(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return np.concatenate([first, second])


def checked(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    seen = second[second[:, SCORE] >= SEES]
    keep = [row[SCORE] >= SURE or any(iou(_box(row), _box(other)) >= CHECK_IOU for other in seen) for row in first]
    return first[np.asarray(keep, bool)] if len(first) else first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenes", type=Path)
    parser.add_argument("--portraits", type=Path, metavar="DIR",
                        help="also the share of a class-folder set's photos (e.g. ../shared/datasets/face-mask) "
                             "with a face at 0.5, per class (a minute or two per way)")
    parser.add_argument("--ways", nargs="+", metavar="NAME",
                        help="only these ways (names as in the table, quoted), beside the one pass")
    args = parser.parse_args()
    ways: list[tuple[str, Look | None, Fuse | None]] = [
        ("one pass (the photo default)", None, None),
        ("mirrored, scores averaged", mirrored_look, mean_of_both),
        ("stock union", stock_look, union),
        ("stock check", stock_look, checked),
        ("mirrored check", mirrored_look, checked),
    ]
    if args.ways:
        unknown = set(args.ways) - {name for name, _, _ in ways}
        if unknown:
            parser.error(f"--ways: unknown {sorted(unknown)}; the ways are {[name for name, _, _ in ways[1:]]}")
        ways = [way for way in ways if way[0] in args.ways or way[1] is None]
    face_free = face_free_images()
    print(f"{args.scenes} val, faces of 16 px and up; {len(face_free)} face-free photos")
    print("way | threshold | masked 16-23 | masked 24+ | bare 16-23 | bare 24+ | below the nose 24+ | "
          "false / photo | face AP | face-free photos with a face | ms / photo")
    print("|".join(["---"] * 11))
    for name, look, fuse in ways:
        detector = YuNetDetector(extra_scales=()) if look is None or fuse is None else Fused(look, fuse)
        results = sweep_thresholds(args.scenes, detector, THRESHOLDS, 16.0, "val")
        detector.score_threshold = min(THRESHOLDS)
        negatives = [max((f.score for f in detector.detect(image)), default=0.0) for image in face_free]
        for threshold, result in zip(THRESHOLDS, results, strict=True):
            recall = result["recall"]
            cells = [recall.get(name_, {}).get(group, {}).get("recall") for name_, group in (  # "-": no such face
                ("with_mask", "16-23"), ("with_mask", "24+"), ("without_mask", "16-23"), ("without_mask", "24+"),
                ("mask_weared_incorrect", "24+"))]
            print(f"{name} | {threshold:g} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells)
                  + f" | {result['false_faces_per_image']:.2f} | {result['face_ap50']:.3f} | "
                  f"{sum(s >= threshold for s in negatives)} | {result['ms_per_image']:.1f}")
        if args.portraits:
            detector.score_threshold = 0.5
            print(f"{name}: {args.portraits} photos with a face at 0.5: " + ", ".join(
                f"{label} {rate:.3f} of {n}" for label, (rate, n) in portraits_found(args.portraits, detector).items()))
    return 0


def portraits_found(root: Path, detector: YuNetDetector) -> dict[str, tuple[float, int]]:
    """Per class folder: the share of the readable photos in which ``detector`` finds a face, and their count."""
    samples, labels = scan_dataset(root)
    found: dict[str, list[bool]] = {label: [] for label in labels}
    for sample in samples:
        try:
            image = load_image(sample.path)
        except ImageError:
            continue
        found[sample.label].append(bool(detector.detect(image)))
    return {label: (float(np.mean(hits)) if hits else 0.0, len(hits)) for label, hits in found.items()}


if __name__ == "__main__":
    sys.exit(main())
