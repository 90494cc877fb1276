"""The whole pipeline in one object: image -> faces -> crops -> classifier -> results."""

from __future__ import annotations

import os

import numpy as np

from maskwatch.classifier import MaskClassifier
from maskwatch.crops import face_crop
from maskwatch.faces import Face, FaceDetector, create_detector
from maskwatch.images import DEFAULT_MAX_PIXELS, ImageError, ImageInput, load_image
from maskwatch.results import WITH_MASK, WITHOUT_MASK, FaceResult, ImageResult


class MaskDetector:
    """Find every face in an image and tell whether it wears a mask.

    >>> detector = MaskDetector()
    >>> for face in detector.detect("photo.jpg"):
    ...     print(face.box, face.label, face.mask_probability)
    """

    def __init__(
        self,
        face_detector: str | FaceDetector = "yunet",
        face_model: str | os.PathLike | None = None,
        classifier: str | os.PathLike | MaskClassifier | None = None,
        face_threshold: float | None = None,
        mask_threshold: float = 0.5,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if isinstance(face_detector, str):
            options: dict[str, object] = {"model_path": face_model}
            if face_threshold is not None:
                options["score_threshold"] = face_threshold
            face_detector = create_detector(face_detector, **options)
        elif face_threshold is not None:
            face_detector.score_threshold = face_threshold
        self.faces = face_detector
        self.classifier = classifier if isinstance(classifier, MaskClassifier) else MaskClassifier(classifier)
        self.mask_threshold = mask_threshold
        self.max_pixels = max_pixels

    def detect(self, image: ImageInput) -> list[FaceResult]:
        """Faces in ``image`` (a BGR array, a path or encoded bytes), largest confidence first.

        Raises ImageError when the input cannot be read as an image.
        """
        return self.detect_array(load_image(image, self.max_pixels))

    def detect_array(self, image: np.ndarray) -> list[FaceResult]:
        """Faces in an already decoded, upright BGR image."""
        return self.classify(image, self.faces.detect(image))

    def classify(self, image: np.ndarray, faces: list[Face]) -> list[FaceResult]:
        """Attach mask labels to faces found by any detector (or given by a tracker)."""
        size, margin = self.classifier.input_size, self.classifier.crop_margin
        crops = [face_crop(image, face.box, size, margin) for face in faces]
        probabilities = self.classifier.mask_probability(crops)
        return [
            FaceResult(
                box=face.box,
                score=face.score,
                landmarks=face.landmarks,
                label=WITH_MASK if p >= self.mask_threshold else WITHOUT_MASK,
                mask_probability=float(p),
            )
            for face, p in zip(faces, probabilities, strict=True)
        ]

    def analyze(self, source: ImageInput, name: str | None = None) -> tuple[ImageResult, np.ndarray | None]:
        """Like ``detect`` but never raises for bad input: the error goes into the result.

        Returns the result and the decoded image (None when it could not be read).
        """
        label = name if name is not None else (str(source) if isinstance(source, (str, os.PathLike)) else "")
        try:
            image = load_image(source, self.max_pixels)
        except ImageError as exc:
            return ImageResult(file=label, error=str(exc)), None
        height, width = image.shape[:2]
        return ImageResult(file=label, width=width, height=height, faces=self.detect_array(image)), image


_default: MaskDetector | None = None


def detect_masks(image: ImageInput) -> list[FaceResult]:
    """One call for newcomers: faces and mask labels in ``image`` with the default models."""
    global _default
    if _default is None:
        _default = MaskDetector()
    return _default.detect(image)
