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
    """The model label an annotated class counts as; None when it is ignored or unknown.

    A name the user mapped wins; then the name itself, or its usual alias (``labels.py``), when the model
    has that label; then the default map.
    """
    explicit = mapping.get(name)
    if explicit is not None and DEFAULT_LABEL_MAP.get(name) != explicit:
        return None if explicit == IGNORE else explicit
    if canonical_label(name) in labels:
        return canonical_label(name)
    target = mapping.get(name)
    return None if target in (None, IGNORE) else target


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
