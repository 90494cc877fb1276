"""What a face detector returns, and the registry that names detectors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from maskwatch.boxes import Box, HasBox


@dataclass
class Face(HasBox):
    """One detected face, in pixels of the image it was found in."""

    box: Box  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((5, 2), np.float32))
    # Landmark order (YuNet's): right eye, left eye, nose tip, right mouth corner, left mouth corner.


class FaceDetector(Protocol):
    """Anything that finds faces in a BGR image."""

    score_threshold: float

    def detect(self, image: np.ndarray) -> list[Face]: ...


_REGISTRY: dict[str, Callable[..., FaceDetector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., FaceDetector]], Callable[..., FaceDetector]]:
    """Class decorator: make a detector available as ``create_detector(name)`` and ``--detector name``."""

    def add(factory: Callable[..., FaceDetector]) -> Callable[..., FaceDetector]:
        _REGISTRY[name] = factory
        return factory

    return add


def detector_names() -> list[str]:
    return sorted(_REGISTRY)


def create_detector(name: str = "yunet", **options: object) -> FaceDetector:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown face detector {name!r}; known: {', '.join(detector_names())}") from None
    return factory(**options)
