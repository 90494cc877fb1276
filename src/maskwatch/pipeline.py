"""The whole pipeline in one object: image -> faces -> crops -> classifier -> results."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from maskwatch.classifier import MaskClassifier
from maskwatch.classifier.decision import OperatingPoint
from maskwatch.crops import face_crop
from maskwatch.faces import Face, FaceDetector, create_detector
from maskwatch.images import DEFAULT_MAX_PIXELS, ImageError, ImageInput, as_bgr, load_image
from maskwatch.inputs import printable_name
from maskwatch.labels import two_class as two_class_label
from maskwatch.options import Options
from maskwatch.results import FaceResult, ImageResult


class MaskDetector:
    """Find every face in an image and tell whether it wears a mask.

    >>> detector = MaskDetector()
    >>> for face in detector.detect("photo.jpg"):
    ...     print(face.box, face.label, face.mask_probability)

    ``label`` is ``with_mask``, ``without_mask`` or ``incorrect_mask`` (a mask under the nose); with
    ``two_class=True`` a mask worn wrong is reported as ``without_mask``. ``mask_threshold`` overrides the
    P(with_mask) cut that the classifier file carries (chosen on real scene photos when it was trained).
    """

    def __init__(
        self,
        face_detector: str | FaceDetector = "yunet",
        face_model: str | os.PathLike | None = None,
        classifier: str | os.PathLike | MaskClassifier | None = None,
        face_threshold: float | None = None,
        mask_threshold: float | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        two_class: bool = False,
    ) -> None:
        """The simple way in; ``MaskDetector.from_options`` takes every setting (``maskwatch.Options``).

        A ``face_detector`` object is used as it is: configure it before passing it in.
        """
        if isinstance(face_detector, str):
            options = Options(detector=face_detector, face_model=None if face_model is None else str(face_model),
                              face_threshold=face_threshold)
            face_detector = create_detector(options.detector, **options.detector_settings())
        elif face_model is not None or face_threshold is not None:
            raise ValueError("face_model and face_threshold configure a detector made by name; set them on the "
                             "detector object you pass, or use MaskDetector.from_options")
        self.faces = face_detector
        self.classifier = classifier if isinstance(classifier, MaskClassifier) else MaskClassifier(classifier)
        model_point = self.classifier.operating_point
        self.operating_point = OperatingPoint(
            model_point.mask_threshold if mask_threshold is None else float(mask_threshold),
            model_point.incorrect_threshold,
        )
        self.two_class = two_class
        self.max_pixels = max_pixels

    @classmethod
    def from_options(cls, options: Options | None = None) -> MaskDetector:
        """The detector every command builds: both models set up from one ``Options``."""
        options = options or Options()
        faces = create_detector(options.detector, **options.detector_settings())
        classifier = MaskClassifier(options.classifier, threads=options.threads)
        return cls(faces, classifier=classifier, mask_threshold=options.mask_threshold,
                   max_pixels=options.max_pixels, two_class=options.two_class)

    @property
    def mask_threshold(self) -> float:
        """The P(with_mask) at or above which a face is labelled ``with_mask``."""
        return self.operating_point.mask_threshold

    @property
    def labels(self) -> list[str]:
        """The labels results can carry: the classifier's, without ``incorrect_mask`` in two-class mode."""
        return list(dict.fromkeys(self.label_of(label) for label in self.classifier.labels))

    def label_of(self, label: str) -> str:
        return two_class_label(label) if self.two_class else label

    def project(self, probabilities: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classifier labels) as columns of ``self.labels`` (merged in two-class mode)."""
        probabilities = np.asarray(probabilities, np.float64).reshape(-1, len(self.classifier.labels))
        labels = self.labels
        out = np.zeros((len(probabilities), len(labels)))
        for k, label in enumerate(self.classifier.labels):
            out[:, labels.index(self.label_of(label))] += probabilities[:, k]
        return out

    def decide(self, probabilities: np.ndarray) -> list[str]:
        """Labels for rows of class probabilities, by the operating point (and the two-class option)."""
        return [self.label_of(label) for label in self.operating_point.labels(probabilities, self.classifier.labels)]

    def detect(self, image: ImageInput) -> list[FaceResult]:
        """Faces in ``image`` (a BGR array, a path or encoded bytes), largest confidence first.

        Raises ImageError when the input cannot be read as an image.
        """
        return self.detect_array(load_image(image, self.max_pixels))

    def detect_array(self, image: np.ndarray) -> list[FaceResult]:
        """Faces in an already decoded, upright image array (BGR uint8 as OpenCV gives it, or any array
        ``detect`` takes: grayscale, BGRA, 16-bit, float)."""
        image = as_bgr(image)
        return self.classify(image, self.faces.detect(image))

    def face_probabilities(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Class probabilities (N, classifier labels) of faces in ``image``: the one crop, the one model call."""
        size, margin = self.classifier.input_size, self.classifier.crop_margin
        return self.classifier.probabilities([face_crop(image, face.box, size, margin) for face in faces])

    def classify(self, image: np.ndarray, faces: Sequence[Face]) -> list[FaceResult]:
        """Attach mask labels to faces found by any detector (or given by a tracker)."""
        probabilities = self.face_probabilities(image, faces)
        labels = self.classifier.labels
        return [
            FaceResult(
                box=face.box,
                score=face.score,
                landmarks=face.landmarks,
                label=label,
                mask_probability=float(p[self.classifier.mask_index]),
                probabilities={name: float(value) for name, value in zip(labels, p, strict=True)},
                two_class=self.two_class,
            )
            for face, p, label in zip(faces, probabilities, self.decide(probabilities), strict=True)
        ]

    def analyze(self, source: ImageInput, name: str | None = None) -> tuple[ImageResult, np.ndarray | None]:
        """Like ``detect`` but never raises for bad input: the error goes into the result.

        Returns the result and the decoded image (None when it could not be read).
        """
        # As the CLI writes it: valid UTF-8 whatever bytes the file name holds.
        label = name if name is not None else (printable_name(source) if isinstance(source, (str, os.PathLike))
                                               else "")
        try:
            image = load_image(source, self.max_pixels)
        except ImageError as exc:
            return ImageResult(file=label, error=str(exc)), None
        return self.result(image, label), image

    def result(self, image: np.ndarray, name: str) -> ImageResult:
        """The result for an already decoded, upright image array: what ``analyze`` and the web service return."""
        image = as_bgr(image)
        height, width = image.shape[:2]
        return ImageResult(file=name, width=width, height=height, faces=self.detect_array(image))


_default: MaskDetector | None = None


def detect_masks(image: ImageInput) -> list[FaceResult]:
    """One call for newcomers: faces and mask labels in ``image`` with the default models."""
    global _default
    if _default is None:
        _default = MaskDetector()
    return _default.detect(image)
