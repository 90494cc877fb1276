"""Choose the thresholds that turn class probabilities into labels (``classifier.decision``) on real scene faces.

The probabilities rank faces; where to cut them is a separate choice. A cut made on portrait photos is
wrong in crowds (bare scene faces were called masked one time in five at 0.5), so the cut is chosen on the
validation faces of the scene sets, by the macro F1 over the classes: every class counts alike however rare,
and each class's precision counts as much as its recall. Balanced accuracy (the mean recall) was tried first:
on the first three-class model it bought the rare class's recall (0.85) with its precision (0.54) and with
masked faces' recall (0.85, against 0.93 at the macro-F1 cut).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from maskwatch.classifier.decision import OperatingPoint
from maskwatch.labels import two_class

# The mask cut gets a finer grid near 1: a model trained on portraits needs a cut that high on crowds.
MASK_THRESHOLDS = [round(float(v), 4) for v in np.r_[np.arange(0.05, 0.95, 0.025), np.arange(0.95, 0.996, 0.005)]]
INCORRECT_THRESHOLDS = [round(float(v), 4) for v in np.arange(0.05, 0.951, 0.025)]
# Mask cuts at which evaluation reports the paper's two-class protocol: portraits and crowds want different cuts.
TWO_CLASS_SWEEP = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int]) -> float:
    """Mean recall over the classes present in ``y_true``."""
    recalls = [float((y_pred[y_true == k] == k).mean()) for k in classes if (y_true == k).any()]
    return float(np.mean(recalls)) if recalls else 0.0


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int]) -> float:
    """Mean F1 over the classes present in ``y_true``."""
    scores = []
    for k in classes:
        if not (y_true == k).any():
            continue
        hit = int(((y_pred == k) & (y_true == k)).sum())
        scores.append(2 * hit / ((y_pred == k).sum() + (y_true == k).sum()))
    return float(np.mean(scores)) if scores else 0.0


def choose_operating_point(probabilities: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> tuple[
        OperatingPoint, dict]:
    """The thresholds with the best macro F1 on (probabilities, y); ties go to the one nearest 0.5.

    Returns the point and what the search saw (macro F1 and balanced accuracy at 0.5 / 0.5 and at the choice).
    """
    classes = sorted(set(np.asarray(y).tolist()))
    default = OperatingPoint()

    def score(point: OperatingPoint) -> float:
        return macro_f1(y, point.indices(probabilities, labels), classes)

    def balanced(point: OperatingPoint) -> float:
        return balanced_accuracy(y, point.indices(probabilities, labels), classes)

    best, best_key = default, (score(default), 0.0)
    for t in MASK_THRESHOLDS:
        for u in INCORRECT_THRESHOLDS:
            point = OperatingPoint(float(t), float(u))
            key = (round(score(point), 6), -abs(t - 0.5) - abs(u - 0.5))
            if key > best_key:
                best, best_key = point, key
    return best, {"faces": int(len(y)), "objective": "macro F1 over the classes",
                  "default_macro_f1": score(default), "chosen_macro_f1": score(best),
                  "default_balanced_accuracy": balanced(default), "chosen_balanced_accuracy": balanced(best),
                  **best.to_dict()}


def two_class_accuracy(probabilities: np.ndarray, y: np.ndarray, labels: list[str], point: OperatingPoint
                       ) -> float | None:
    """Accuracy when only "mask worn right" or not is asked (the paper's two classes)."""
    if not len(y):
        return None
    predicted = [two_class(labels[i]) for i in point.indices(probabilities, labels)]
    return float(np.mean([p == two_class(labels[t]) for p, t in zip(predicted, y, strict=True)]))


def two_class_by_mask_threshold(probabilities: np.ndarray, y: np.ndarray, labels: list[str], point: OperatingPoint,
                                thresholds: Sequence[float] = TWO_CLASS_SWEEP) -> dict[str, float | None]:
    """``two_class_accuracy`` with the mask cut moved to each of ``thresholds`` (the two classes depend on it
    alone); keys are the thresholds as text."""
    return {f"{t:g}": two_class_accuracy(probabilities, y, labels, OperatingPoint(t, point.incorrect_threshold))
            for t in thresholds}
