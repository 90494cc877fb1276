"""Pieces the face-set and scene evaluations share: class probabilities per face, label maps, tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from maskwatch.labels import INCORRECT_MASK, WITHOUT_MASK, canonical_label
from maskwatch.pipeline import MaskDetector

IGNORE = "ignore"
# Public face-mask sets (e.g. the Kaggle "Face Mask Detection" VOC set) call a mask worn below the nose
# "mask_weared_incorrect": it counts as incorrect_mask for a model that has that label, and as
# without_mask (it protects no better than none) for a two-class model or in two-class mode.
DEFAULT_LABEL_MAP = {"mask_weared_incorrect": WITHOUT_MASK, INCORRECT_MASK: WITHOUT_MASK}


def parse_label_map(items: Iterable[str], labels: Sequence[str]) -> dict[str, str]:
    """The user's ``["other=without_mask", "hat=ignore"]``; targets must be model labels or ignore.

    The default map is not copied in: ``map_label`` falls back to it only where the model lacks a label.
    """
    mapping: dict[str, str] = {}
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
    """The model label an annotated class counts as; None when it is ignored or unknown.

    The user's map wins; then the name itself, or its usual alias (``labels.py``), when the model has that
    label; then the default map (a two-class model counts a mask below the nose as none).
    """
    if name in mapping:
        return None if mapping[name] == IGNORE else mapping[name]
    canonical = canonical_label(name)
    if canonical in labels:
        return canonical
    fallback = DEFAULT_LABEL_MAP.get(name)
    return fallback if fallback in labels else None


def predict(detector: MaskDetector, probabilities: np.ndarray) -> np.ndarray:
    """Indices into ``detector.labels`` by the pipeline's own rule (operating point, two-class option)."""
    labels = detector.labels
    return np.array([labels.index(label) for label in detector.decide(probabilities)], int)


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
