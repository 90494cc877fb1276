"""Steady labels for tracked faces: an exponential moving average of P(mask) with hysteresis.

A single frame's classification flickers (motion blur, a turned head, a hand over the
mouth). Averaging over the track and demanding a clear margin before the label flips
keeps one person from being counted or alerted on twice.
"""

from __future__ import annotations

from maskwatch.results import WITH_MASK, WITHOUT_MASK


class LabelSmoother:
    """Smoothed P(with_mask) and a label that changes only when the average clears ``margin``.

    ``alpha`` is the weight of each new observation (0.3: about the last 5-6 count).
    """

    def __init__(self, threshold: float = 0.5, alpha: float = 0.3, margin: float = 0.15) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.threshold = threshold
        self.alpha = alpha
        self.margin = margin
        self.probability: float | None = None
        self.label: str | None = None

    def update(self, mask_probability: float) -> str:
        """Fold in one classification; return the smoothed label."""
        if self.probability is None or self.label is None:
            self.probability = float(mask_probability)
            self.label = WITH_MASK if self.probability >= self.threshold else WITHOUT_MASK
            return self.label
        self.probability += self.alpha * (float(mask_probability) - self.probability)
        if self.label == WITHOUT_MASK and self.probability >= self.threshold + self.margin:
            self.label = WITH_MASK
        elif self.label == WITH_MASK and self.probability < self.threshold - self.margin:
            self.label = WITHOUT_MASK
        return self.label
