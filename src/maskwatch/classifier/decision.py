"""From class probabilities to a label: the one rule every entry point uses (CLI, API, video, web, evaluation).

A face is ``with_mask`` when P(with_mask) reaches ``mask_threshold``. Otherwise, when the model knows
``incorrect_mask``, it is ``incorrect_mask`` when that class holds at least ``incorrect_threshold`` of the
remaining probability, else ``without_mask``; a model with other labels takes the likeliest remaining one.
Both thresholds travel inside the model file (chosen on real scene faces when it was trained); an option
may override them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maskwatch.labels import INCORRECT_MASK, WITH_MASK, WITHOUT_MASK


@dataclass(frozen=True)
class OperatingPoint:
    mask_threshold: float = 0.5
    incorrect_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name, value in (("mask_threshold", self.mask_threshold), ("incorrect_threshold", self.incorrect_threshold)):
            if not 0.0 <= value <= 1.0:  # NaN too
                raise ValueError(f"{name} must be between 0 and 1, got {value}")

    def indices(self, probabilities: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """The label index of each row of ``probabilities`` (N, len(labels))."""
        probabilities = np.asarray(probabilities, np.float64)
        if len(probabilities) == 0:
            return np.zeros(0, int)
        labels = list(labels)
        mask = labels.index(WITH_MASK)
        others = probabilities.copy()
        others[:, mask] = -1.0
        chosen = others.argmax(axis=1)
        if INCORRECT_MASK in labels and WITHOUT_MASK in labels:
            incorrect, bare = labels.index(INCORRECT_MASK), labels.index(WITHOUT_MASK)
            rest = probabilities[:, incorrect] + probabilities[:, bare]
            share = np.divide(probabilities[:, incorrect], rest, out=np.zeros(len(rest)), where=rest > 0)
            chosen = np.where(share >= self.incorrect_threshold, incorrect, bare)
        return np.where(probabilities[:, mask] >= self.mask_threshold, mask, chosen)

    def labels(self, probabilities: np.ndarray, labels: Sequence[str]) -> list[str]:
        return [labels[i] for i in self.indices(probabilities, labels)]

    def to_dict(self) -> dict[str, float]:
        return {"mask_threshold": self.mask_threshold, "incorrect_threshold": self.incorrect_threshold}
