"""The results type that flows from the pipeline to every output: CLI JSON, drawings, video, web API.

``ImageResult.to_dict()`` is the public JSON contract of ``maskwatch detect``:
fields may be added, never renamed or removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskwatch.boxes import Box, HasBox
from maskwatch.labels import INCORRECT_MASK, LABELS, WITH_MASK, WITHOUT_MASK

__all__ = ["INCORRECT_MASK", "LABELS", "WITHOUT_MASK", "WITH_MASK", "FaceResult", "ImageResult"]


@dataclass(eq=False)
class FaceResult(HasBox):
    """One face: where it is, how sure the detector is, and whether it wears a mask (and wears it right)."""

    box: Box  # x1, y1, x2, y2 in image pixels
    score: float  # face detector confidence
    landmarks: np.ndarray  # (5, 2): right eye, left eye, nose tip, right and left mouth corners
    label: str  # "with_mask", "without_mask" or "incorrect_mask" (a mask under the nose)
    mask_probability: float  # P(with_mask): P(a mask worn correctly) from the classifier
    probabilities: dict[str, float] = field(default_factory=dict)  # P(label) for every label the model knows
    # Labelled in the two-class view (``without_mask`` holds ``incorrect_mask`` too); not a JSON field: the
    # JSON says it by never holding ``incorrect_mask`` as a label.
    two_class: bool = False

    @property
    def has_mask(self) -> bool:
        """Whether the face wears a mask correctly (a mask under the nose does not count)."""
        return self.label == WITH_MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaceResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "label": self.label,
            "mask_probability": round(float(self.mask_probability), 4),
            "probabilities": {label: round(float(p), 4) for label, p in self.probabilities.items()},
        }


@dataclass
class ImageResult:
    """Everything found in one input, or the reason it could not be read."""

    file: str
    width: int = 0
    height: int = 0
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "faces": [face.to_dict() for face in self.faces],
            "error": self.error,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)
