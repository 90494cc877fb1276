"""A real ONNX mask classifier whose answer is fixed: every crop gets the same class probabilities.

It runs through onnxruntime like the shipped model, with maskwatch metadata inside the file, so the
tests of the command line, API, web service and video can demand an exact label (e.g. ``incorrect_mask``)
without depending on what a trained model thinks of a given photo.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LABELS = ["incorrect_mask", "with_mask", "without_mask"]
SIZE = 32


def write_fixed_classifier(path: Path, probabilities: Mapping[str, float], operating_point: dict | None = None,
                           labels: list[str] | None = None) -> Path:
    """Write an ONNX classifier that answers ``probabilities`` for every crop (its input is averaged away)."""
    labels = labels or LABELS
    target = np.array([probabilities[label] for label in labels], np.float32)
    logits = np.log(np.clip(target, 1e-6, 1.0)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "zero"], ["nothing"]),  # (N, 3) x (3, K): zeros, keeps N
        helper.make_node("Add", ["nothing", "logits"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "fixed",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", len(labels)])],
        [numpy_helper.from_array(np.zeros((3, len(labels)), np.float32), "zero"),
         numpy_helper.from_array(logits, "logits")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {"labels": labels, "input_size": SIZE, "channel_order": "RGB", "mean": [0, 0, 0],
                "std": [1, 1, 1], "crop_margin": 0.2}
    if operating_point is not None:
        metadata["operating_point"] = operating_point
    entry = model.metadata_props.add()
    entry.key, entry.value = "maskwatch", json.dumps(metadata)
    onnx.save(model, str(path))
    return path
