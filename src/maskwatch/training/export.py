"""Export a trained MaskNet to ONNX with everything inference needs written inside the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import torch

from maskwatch.classifier.onnx_classifier import METADATA_KEY
from maskwatch.training.model import MaskNet

OPSET = 17


def export_onnx(model: MaskNet, path: Path, input_size: int, metadata: dict[str, Any]) -> Path:
    """Write ``model`` (float32 NCHW in, class probabilities out) with ``metadata`` as JSON."""
    model = model.eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (dummy,), str(path), input_names=["image"], output_names=["probabilities"],
        dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=OPSET, dynamo=False,
    )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    proto.producer_name = "maskwatch"
    onnx.save(proto, str(path))
    return path
