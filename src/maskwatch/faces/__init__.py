"""Stage 1: find faces. Detectors are registered by name so others can be added beside YuNet."""

from maskwatch.faces.base import Face, FaceDetector, create_detector, detector_names, register_detector
from maskwatch.faces.yunet import YuNetDetector

__all__ = [
    "Face",
    "FaceDetector",
    "YuNetDetector",
    "create_detector",
    "detector_names",
    "register_detector",
]
