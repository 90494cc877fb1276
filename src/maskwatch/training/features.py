"""Frozen-backbone features, computed once with onnxruntime and cached on disk.

With the backbone frozen, training only touches the head: the expensive part
is running the backbone over every (augmented) view once. onnxruntime does that
2-5x faster than PyTorch eager on CPU, and it is the same runtime inference uses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from tqdm import tqdm

from maskwatch.classifier.onnx_classifier import normalise
from maskwatch.training.backbones import BackboneSpec
from maskwatch.training.model import freeze

BATCH = 64


class FeatureExtractor:
    """The frozen backbone as an onnxruntime session: BGR crops -> (N, C) features."""

    def __init__(self, module: nn.Module, spec: BackboneSpec, input_size: int, cache_dir: Path, tag: str) -> None:
        self.spec, self.input_size = spec, input_size
        path = Path(cache_dir) / f"backbone-{tag}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            backbone = module
            freeze(backbone)
            tmp = path.with_suffix(".tmp")
            torch.onnx.export(
                backbone, (torch.zeros(1, 3, input_size, input_size),), str(tmp), input_names=["image"],
                output_names=["features"], dynamic_axes={"image": {0: "n"}, "features": {0: "n"}},
                opset_version=17, dynamo=False,
            )
            tmp.replace(path)
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        probe = np.zeros((1, 3, input_size, input_size), np.float32)
        self.feature_dim = int(self.session.run(None, {"image": probe})[0].shape[1])

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        batch = normalise(crops, np.array(self.spec.mean), np.array(self.spec.std), "RGB")
        return self.session.run(None, {"image": batch})[0]


def torch_features(
    module: nn.Module, spec: BackboneSpec, items: Sequence[str], make_view: Callable[[str], np.ndarray]
) -> np.ndarray:
    """Features of ``make_view(item)`` for every item from a PyTorch backbone (a fine-tuned one), uncached."""
    module.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(items), BATCH):
            batch = normalise([make_view(item) for item in items[start:start + BATCH]],
                              np.array(spec.mean), np.array(spec.std), "RGB")
            chunks.append(module(to_channels_last(batch)).numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def to_channels_last(batch: np.ndarray) -> torch.Tensor:
    """An NCHW batch in channels-last memory: on CPU, convolutions run about twice as fast on it."""
    return torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)


def cached_features(
    extractor: FeatureExtractor,
    items: Sequence[str],
    make_view: Callable[[str], np.ndarray],
    cache_dir: Path,
    key: dict,
    desc: str,
) -> np.ndarray:
    """Features of ``make_view(item)`` for every item, cached under a hash of ``key`` and the items."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for item in items:
        digest.update(item.encode())
    path = Path(cache_dir) / f"features-{digest.hexdigest()[:20]}.npy"
    if path.exists():
        return np.load(path)
    out = np.zeros((len(items), extractor.feature_dim), np.float32)
    for start in tqdm(range(0, len(items), BATCH), desc=desc, unit="batch"):
        chunk = items[start:start + BATCH]
        out[start:start + len(chunk)] = extractor([make_view(item) for item in chunk])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out
