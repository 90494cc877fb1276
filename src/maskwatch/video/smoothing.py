"""Steady labels for tracked faces: exponential moving averages of the class probabilities, with hysteresis.

A single frame's classification flickers (motion blur, a turned head, a hand over the mouth). Averaging over
the track and demanding a clear margin before the label flips keeps one person from being counted or
alerted on twice. The cuts are the detector's operating point (``classifier.decision``): the smoothed
P(with_mask) against the mask threshold, then the smoothed share of ``incorrect_mask`` in the rest against
the incorrect threshold. The hysteresis band scales with the room on each side of a cut, so a cut at 0.97
gets a band as tight as its room above.
"""

from __future__ import annotations

from collections.abc import Mapping

from maskwatch.classifier.decision import OperatingPoint
from maskwatch.labels import INCORRECT_MASK, WITH_MASK, WITHOUT_MASK


def _band(threshold: float, margin: float) -> float:
    """Half the hysteresis band around ``threshold``: ``margin`` at 0.5, narrower near 0 or 1."""
    return margin * 2.0 * min(threshold, 1.0 - threshold)


def check_smoothing(alpha: float, margin: float) -> None:
    """ValueError unless 0 < ``alpha`` <= 1 and 0 <= ``margin`` <= 0.5 (a wider band could hold a label for
    ever: its edge would pass 0 or 1)."""
    if not 0.0 < alpha <= 1.0:  # NaN too
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if not 0.0 <= margin <= 0.5:
        raise ValueError(f"margin must be in [0, 0.5], got {margin}")


class LabelSmoother:
    """Smoothed probabilities and a label that changes only when the average clears the band around a cut.

    ``alpha`` is the weight of each new observation (0.3: about the last 5-6 count).
    """

    def __init__(self, threshold: OperatingPoint | float = 0.5, alpha: float = 0.3, margin: float = 0.15) -> None:
        """``threshold``: the detector's operating point, or just the P(with_mask) cut."""
        check_smoothing(alpha, margin)
        self.point = threshold if isinstance(threshold, OperatingPoint) else OperatingPoint(float(threshold))
        self.alpha = alpha
        self.margin = margin
        self.probability: float | None = None  # smoothed P(with_mask)
        self.incorrect_share: float | None = None  # smoothed P(incorrect_mask) / (1 - P(with_mask))
        self.label: str | None = None

    @property
    def threshold(self) -> float:
        return self.point.mask_threshold

    def uncertain(self) -> bool:
        """Near the mask cut (or never seen): worth classifying again soon."""
        if self.probability is None:
            return True
        return abs(self.probability - self.threshold) < 0.7 * min(self.threshold, 1.0 - self.threshold)

    def update(self, observation: float | Mapping[str, float]) -> str:
        """Fold in one classification (P(with_mask), or every class's probability); return the smoothed label."""
        if isinstance(observation, Mapping):
            mask = float(observation.get(WITH_MASK, 0.0))
            incorrect = observation.get(INCORRECT_MASK)
            rest = 1.0 - mask
            share = None if incorrect is None else (float(incorrect) / rest if rest > 1e-9 else 0.0)
        else:
            mask, share = float(observation), None
        if self.probability is None or self.label is None:
            self.probability, self.incorrect_share = mask, share
            self.label = self._fresh_label()
            return self.label
        self.probability += self.alpha * (mask - self.probability)
        if share is not None:
            self.incorrect_share = share if self.incorrect_share is None else (
                self.incorrect_share + self.alpha * (share - self.incorrect_share))
        self.label = self._steady_label(self.label)
        return self.label

    def _fresh_label(self) -> str:
        assert self.probability is not None
        if self.probability >= self.threshold:
            return WITH_MASK
        return self._bare_or_incorrect(None)

    def _steady_label(self, current: str) -> str:
        assert self.probability is not None
        band = _band(self.threshold, self.margin)
        masked = self.probability >= self.threshold + band if current != WITH_MASK else (
            self.probability >= self.threshold - band)
        if masked:
            return WITH_MASK
        return self._bare_or_incorrect(current)

    def _bare_or_incorrect(self, current: str | None) -> str:
        if self.incorrect_share is None:
            return WITHOUT_MASK
        cut = self.point.incorrect_threshold
        band = _band(cut, self.margin) if current in (WITHOUT_MASK, INCORRECT_MASK) else 0.0
        if current == INCORRECT_MASK:
            return INCORRECT_MASK if self.incorrect_share >= cut - band else WITHOUT_MASK
        return INCORRECT_MASK if self.incorrect_share >= cut + band else WITHOUT_MASK
