"""Stage 2: tell whether a face crop wears a mask."""

from maskwatch.classifier.onnx_classifier import DEFAULT_CLASSIFIER_PATH, MaskClassifier

__all__ = ["DEFAULT_CLASSIFIER_PATH", "MaskClassifier"]
