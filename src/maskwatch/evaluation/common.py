"""Pieces the face-set and scene evaluations share: class probabilities per face, label maps, tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from maskwatch.classifier.onnx_classifier import MASK_LABEL, MaskClassifier
from maskwatch.crops import face_crop
from maskwatch.faces import Face

IGNORE = "ignore"
# Public face-mask sets (e.g. the Kaggle "Face Mask Detection" VOC set) have a third class for masks
# worn below the nose; it protects no better than no mask, so it is scored as without_mask unless mapped.
DEFAULT_LABEL_MAP = {"mask_weared_incorrect": "without_mask"}


def parse_label_map(items: Iterable[str], labels: Sequence[str]) -> dict[str, str]:
    """``["other=without_mask", "hat=ignore"]`` on top of the default map; targets must be model labels or ignore."""
    mapping = dict(DEFAULT_LABEL_MAP)
    for item in items:
        name, sep, target = item.partition("=")
        name, target = name.strip(), target.strip()
        if not sep or not name or not target:
            raise ValueError(f"--map-label takes NAME=LABEL, not {item!r}")
        mapping[name] = target
    for name, target in mapping.items():
        if target != IGNORE and target not in labels:
            raise ValueError(f"--map-label {name}={target}: {target!r} is not one of the model's labels "
                             f"{list(labels)} (or {IGNORE!r})")
    return mapping


def map_label(name: str, mapping: dict[str, str], labels: Sequence[str]) -> str | None:
    """The model label an annotated class counts as; None when it is ignored or unknown."""
    if name in labels:
        return name
    target = mapping.get(name)
    return None if target in (None, IGNORE) else target


def face_probabilities(classifier: MaskClassifier, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """Class probabilities (N, labels) for faces of ``image``, cropped exactly as the pipeline crops them."""
    crops = [face_crop(image, face.box, classifier.input_size, classifier.crop_margin) for face in faces]
    return classifier.probabilities(crops)


def predict(probabilities: np.ndarray, labels: Sequence[str], mask_threshold: float) -> np.ndarray:
    """Label indices by the pipeline's rule: with_mask when P(with_mask) >= threshold, else the likeliest other."""
    probabilities = np.asarray(probabilities, float)
    if len(probabilities) == 0:
        return np.zeros(0, int)
    mask = list(labels).index(MASK_LABEL)
    others = probabilities.copy()
    others[:, mask] = -1.0
    return np.where(probabilities[:, mask] >= mask_threshold, mask, others.argmax(axis=1))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: object, digits: int = 3) -> str:
    """Numbers as tables show them: floats rounded, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}f}"
    return str(value)
