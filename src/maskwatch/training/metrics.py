"""Classification metrics on plain numpy arrays (no scikit-learn at run time)."""

from __future__ import annotations

import numpy as np


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, per-class precision / recall / F1 / support, and the confusion matrix (rows: true)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp = confusion[i, i]
        predicted, actual = confusion[:, i].sum(), confusion[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                            "support": int(actual)}
    accuracy = float(np.trace(confusion) / confusion.sum()) if confusion.sum() else 0.0
    return {"accuracy": accuracy, "n": int(confusion.sum()), "per_class": per_class,
            "confusion": confusion.tolist(), "labels": labels}


# Calibration is measured as in Guo et al. 2017, "On Calibration of Modern Neural Networks":
# top-label confidence, 15 equal-width bins over [0, 1].
ECE_BINS = 15


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score, highest threshold first.

    ``positive`` is boolean (the positive class); tied scores move both rates at once, so
    the curve has one point per distinct score and starts at (0, 0).
    """
    positive, scores = np.asarray(positive, bool), np.asarray(scores, float)
    order = np.argsort(-scores, kind="stable")
    positive, scores = positive[order], scores[order]
    # The last index of each run of equal scores: a threshold cannot split tied items.
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1] if len(scores) else np.array([], int)
    tp, fp = np.cumsum(positive)[last], np.cumsum(~positive)[last]
    n_pos, n_neg = positive.sum(), (~positive).sum()
    tpr = np.r_[0.0, tp / n_pos] if n_pos else np.full(len(last) + 1, np.nan)
    fpr = np.r_[0.0, fp / n_neg] if n_neg else np.full(len(last) + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, scores[last]]


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random positive outscores a random negative (ties 1/2).

    None when only one class is present, where the area is undefined.
    """
    positive, scores = np.asarray(positive, bool), np.asarray(scores, float)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    # Mann-Whitney U from average ranks: exact, handles ties, O(n log n).
    ranks = _average_ranks(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2
    return ranks


def calibration_bins(probabilities: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width bin of top-label confidence: count, mean confidence and accuracy (None when empty)."""
    probabilities, y_true = np.asarray(probabilities, float), np.asarray(y_true)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 falls in the first.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    correct_sum = np.bincount(index, weights=correct.astype(float), minlength=bins)
    return {
        "edges": np.linspace(0, 1, bins + 1).tolist(),
        "count": counts.tolist(),
        "confidence": [float(c / n) if n else None for c, n in zip(conf_sum, counts, strict=True)],
        "accuracy": [float(c / n) if n else None for c, n in zip(correct_sum, counts, strict=True)],
    }


def expected_calibration_error(probabilities: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (bin share) x |accuracy - mean confidence|, on the top label's confidence."""
    table = calibration_bins(probabilities, y_true, bins)
    total = sum(table["count"])
    if not total:
        return 0.0
    return float(sum(n / total * abs(a - c) for n, a, c in
                     zip(table["count"], table["accuracy"], table["confidence"], strict=True) if n))


def negative_log_likelihood(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    probabilities = np.asarray(probabilities, float)
    picked = probabilities[np.arange(len(probabilities)), np.asarray(y_true)]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the same ranking, sharper (T < 1) or softer (T > 1) probabilities."""
    logits = np.log(np.clip(np.asarray(probabilities, float), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(probabilities: np.ndarray, y_true: np.ndarray, low: float = TEMPERATURE_RANGE[0],
                    high: float = TEMPERATURE_RANGE[1]) -> float:
    """The temperature in [low, high] that minimises the negative log-likelihood of ``y_true``.

    A result at either end means there is no interior minimum: with every validation image
    right (perfectly separated), the likelihood only grows as T goes to 0.

    One parameter and a smooth, unimodal loss in log T: a coarse grid, then golden-section
    search around the best grid point, is exact enough and needs no optimiser library.
    """
    def loss(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(probabilities, float(np.exp(log_t))), y_true)

    grid = np.linspace(np.log(low), np.log(high), 61)
    best = int(np.argmin([loss(t) for t in grid]))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(60):
        if loss(c) < loss(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    return float(np.exp((a + b) / 2))


def average_precision(scores: np.ndarray, is_true_positive: np.ndarray, positives: int) -> float | None:
    """All-point interpolated AP (PASCAL VOC 2010+): area under the precision envelope over recall.

    ``scores`` and ``is_true_positive`` describe every detection (true or false positive);
    ``positives`` is the number of ground-truth objects, found or not. None when there are none.
    """
    if positives <= 0:
        return None
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    hits = np.asarray(is_true_positive, bool)[order]
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall = np.r_[0.0, tp / positives]
    precision = np.r_[1.0, tp / np.maximum(tp + fp, 1)]
    # Envelope: the best precision at this recall or any higher one.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * precision[1:]))
