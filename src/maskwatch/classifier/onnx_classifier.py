"""Run an exported mask classifier with onnxruntime; everything it needs is read from the file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from maskwatch.classifier.decision import OperatingPoint
from maskwatch.cores import usable_cores
from maskwatch.labels import WITH_MASK

# The classifier file of the package, and of every training run folder.
MODEL_FILE_NAME = "mask_classifier.onnx"
DEFAULT_CLASSIFIER_PATH = Path(__file__).resolve().parent.parent / "models" / MODEL_FILE_NAME
METADATA_KEY = "maskwatch"


class MaskClassifier:
    """Probability that each face crop shows a mask.

    The ONNX file carries a JSON metadata entry ``maskwatch`` with the labels,
    input size, colour order, normalisation and crop margin it was trained with,
    so a model and its preprocessing can never be mixed up.
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None) -> None:
        self.path = Path(path) if path is not None else DEFAULT_CLASSIFIER_PATH
        if not self.path.is_file():
            raise FileNotFoundError(f"mask classifier not found: {self.path}")
        options = ort.SessionOptions()
        # onnxruntime's worker threads busy-wait after each run by default and then hold the
        # cores YuNet needs next: on 2 cores, YuNet + classifier per 640x480 frame took 152 ms
        # with spinning and 55 ms without (benchmarks/video.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = threads or usable_cores()
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.metadata = read_metadata(self.session)
        self.labels: list[str] = list(self.metadata["labels"])
        self.input_size = int(self.metadata["input_size"])
        self.crop_margin = float(self.metadata["crop_margin"])
        self.mean = np.asarray(self.metadata["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(self.metadata["std"], np.float32).reshape(1, 3, 1, 1)
        self.channel_order = self.metadata.get("channel_order", "RGB")
        if WITH_MASK not in self.labels:
            raise ValueError(f"{self.path}: the model's labels {self.labels} do not include {WITH_MASK!r}")
        self.mask_index = self.labels.index(WITH_MASK)
        # The thresholds chosen when the model was trained (on real scene faces); 0.5 for older files.
        point = self.metadata.get("operating_point") or {}
        self.operating_point = OperatingPoint(float(point.get("mask_threshold", 0.5)),
                                              float(point.get("incorrect_threshold", 0.5)))
        self.input_name = self.session.get_inputs()[0].name

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 crops of ``input_size`` -> the normalised NCHW float batch the model expects."""
        return normalise(crops, self.mean, self.std, self.channel_order)

    def probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities, shape (N, len(labels))."""
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        for crop in crops:
            if crop.shape[:2] != (self.input_size, self.input_size):
                raise ValueError(f"crop of shape {crop.shape} given; the model takes {self.input_size} px")
        (probs,) = self.session.run(None, {self.input_name: self.preprocess(crops)})
        return np.asarray(probs)

    def mask_probability(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """P(with_mask) for each crop, shape (N,)."""
        return self.probabilities(crops)[:, self.mask_index]


def normalise(crops: Sequence[np.ndarray], mean: np.ndarray, std: np.ndarray, channel_order: str) -> np.ndarray:
    """Stack BGR uint8 crops into a float32 NCHW batch: channel order, then (x - mean) / std on 0-255.

    The channels are reordered and moved while the pixels are still bytes, then converted once and
    normalised in place: 0.5 ms for 8 crops of 160 px here, against 13 ms converting first (the same
    floats, bit for bit; README, "Speed")."""
    batch = np.stack(crops)
    if channel_order == "RGB":
        batch = batch[..., ::-1]
    out = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)
    out -= np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    out /= np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return out


def read_metadata(session: ort.InferenceSession) -> dict[str, Any]:
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ValueError("this ONNX file has no maskwatch metadata; export it with `maskwatch export`")
    return json.loads(props[METADATA_KEY])
