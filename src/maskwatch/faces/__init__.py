"""Stage 1: find faces. Detectors are registered by name: YuNet (the default) and RetinaFace."""

from maskwatch.faces.base import Face, FaceDetector, create_detector, detector_names, register_detector
from maskwatch.faces.retinaface import RetinaFaceDetector
from maskwatch.faces.yunet import YuNetDetector

__all__ = [
    "Face",
    "FaceDetector",
    "RetinaFaceDetector",
    "YuNetDetector",
    "create_detector",
    "detector_names",
    "register_detector",
]
