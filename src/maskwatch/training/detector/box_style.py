"""One box style for every source: scene sets merged from several annotators box faces differently.

mask-scenes joins three public sets. Measured against the stock YuNet on the train split, two of them draw boxes
about a quarter larger than YuNet does (chin and forehead in), the third boxes almost as YuNet does. Trained on
the mix, a detector learns a box between the styles and misses the IoU 0.5 match on the largest source
(bare-face recall 0.94 -> 0.86 there). With ``align_boxes``, each source's boxes are moved into one reference
style, that of the source with the most faces: the stock model is the common ruler.

Measured (``train-detector --align-boxes``, MODEL_CARD.md): the largest source's faces are found more often, the
other two sources' less, because val keeps each source's own style; the mixed box the plain run learns scores
better on the mixed val. So it is an option, off by default.

A source's style is the median offset and scale of the stock model's box against the annotated one, over the
faces both agree on (IoU >= ``MIN_MATCH_IOU``, face at least ``MIN_FACE`` px): ``detected = style(annotated)``.
A box of source S goes to the reference R by ``R⁻¹(S(box))``. Sources with fewer than ``MIN_MATCHES`` matched
faces are left as they are. Val boxes are never moved: every figure is measured against the annotation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from maskwatch.boxes import iou
from maskwatch.training.detector.data import DetectorSample

MIN_MATCH_IOU = 0.4
MIN_FACE = 24.0
MIN_MATCHES = 30


@dataclass(frozen=True)
class BoxStyle:
    """How a detector's box relates to a source's annotated box, in units of the annotated box's size."""

    dx: float = 0.0  # centre shift, x, / width
    dy: float = 0.0  # centre shift, y, / height
    sw: float = 1.0  # width ratio
    sh: float = 1.0  # height ratio
    matches: int = 0  # faces it was measured on

    @property
    def usable(self) -> bool:
        """Measured on enough faces to move boxes by."""
        return self.matches >= MIN_MATCHES

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """The box this style's annotator would see as ``boxes`` -> the detector's box."""
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 + self.dx * w, (boxes[:, 1] + boxes[:, 3]) / 2 + self.dy * h
        return _corners(cx, cy, w * self.sw, h * self.sh)

    def invert(self, boxes: np.ndarray) -> np.ndarray:
        """The detector's box -> the box this style's annotator would draw."""
        w, h = (boxes[:, 2] - boxes[:, 0]) / self.sw, (boxes[:, 3] - boxes[:, 1]) / self.sh
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 - self.dx * w, (boxes[:, 1] + boxes[:, 3]) / 2 - self.dy * h
        return _corners(cx, cy, w, h)


def _corners(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)


def measure_box_styles(samples: Sequence[DetectorSample],
                       detect: Callable[[DetectorSample], np.ndarray]) -> dict[str, BoxStyle]:
    """Each source's style against the boxes ``detect`` gives for a sample (N, 4 x1 y1 x2 y2 pixel boxes)."""
    rows: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for sample in samples:
        found = detect(sample)
        for box in sample.boxes:
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            if min(w, h) < MIN_FACE or not len(found):
                continue
            overlaps = [iou(box, f) for f in found]
            best = int(np.argmax(overlaps))
            if overlaps[best] < MIN_MATCH_IOU:
                continue
            f = found[best]
            rows[sample.source].append((((f[0] + f[2]) - (box[0] + box[2])) / 2 / w,
                                        ((f[1] + f[3]) - (box[1] + box[3])) / 2 / h,
                                        (f[2] - f[0]) / w, (f[3] - f[1]) / h))
    styles = {}
    for source, values in rows.items():
        dx, dy, sw, sh = np.median(np.array(values), axis=0)
        styles[source] = BoxStyle(float(dx), float(dy), float(sw), float(sh), len(values))
    return styles


def reference_source(styles: dict[str, BoxStyle]) -> str | None:
    """The source whose style the others are moved into: the one measured on the most faces."""
    usable = [s for s, style in styles.items() if style.usable]
    return max(usable, key=lambda s: styles[s].matches) if usable else None


def align_box_styles(samples: list[DetectorSample], styles: dict[str, BoxStyle],
                     reference: str | None) -> list[DetectorSample]:
    """``samples`` with every box of a measured source moved into the ``reference`` source's style."""
    if reference is None:
        return list(samples)
    target = styles[reference]
    aligned = []
    for sample in samples:
        style = styles.get(sample.source)
        if style is None or not style.usable or sample.source == reference or not len(sample.boxes):
            aligned.append(sample)
            continue
        aligned.append(replace(sample, boxes=target.invert(style.apply(sample.boxes))))
    return aligned
