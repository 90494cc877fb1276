"""Keras ImageNet weights (legacy HDF5 weights files) into the PyTorch ports of Keras applications.

Keras' weights files use the Keras 2 HDF5 layout: the root (or ``model_weights``)
has an attribute ``layer_names``; each layer is a group whose attribute
``weight_names`` lists its datasets (``conv1_conv/kernel:0`` and so on, stored at
``conv1_conv/conv1_conv/kernel:0``). Weights are matched by layer name, never by
order, and every layer must match in both directions with exact shapes: a
silently half-loaded backbone would train without error and just be worse.

The ResNet50V2 file is pinned by the md5 that Keras itself publishes for it
(``WEIGHTS_HASHES`` in ``keras/src/applications/resnet.py``); Keras publishes no
sha256 for it, so ``model_files.resolve`` checks it with md5.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from maskwatch.model_files import ModelFile, resolve

RESNET50V2_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
RESNET50V2_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{RESNET50V2_FILE}"
# Keras' WEIGHTS_HASHES["resnet50v2"][1] (the notop file); Keras verifies it as md5 (32 hex digits).
RESNET50V2_MD5 = "fac2f116257151a9d068a22e544a4917"
RESNET50V2_ENV = "MASKWATCH_RESNET50V2_WEIGHTS"
RESNET50V2_URL_ENV = "MASKWATCH_RESNET50V2_URL"


class KerasWeightsError(ValueError):
    """The HDF5 file does not fit the model (missing, extra or mis-shaped layers)."""


# --- finding the file -------------------------------------------------------------------------------------------

RESNET50V2 = ModelFile(
    name=RESNET50V2_FILE, url=RESNET50V2_URL, sha256=RESNET50V2_MD5, env_var=RESNET50V2_ENV,
    url_env_var=RESNET50V2_URL_ENV, option="pretrained_weights_path=", algorithm="md5",
)


def resolve_resnet50v2_weights(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Keras' ResNet50V2 notop file: ``path``, else $MASKWATCH_RESNET50V2_WEIGHTS, else the cache
    (re-verified), else a download from Keras' URL ($MASKWATCH_RESNET50V2_URL overrides it) that is
    refused unless its md5 is Keras' published one. Raises ModelFileError saying how to supply it."""
    return resolve(RESNET50V2, path, download=download)


# --- reading the file ---------------------------------------------------------------------------------------------


def read_keras_h5(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {short weight name (kernel, bias, gamma, ...): array}} for layers that have weights."""
    import h5py  # the train extra; only needed here

    layers: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        for layer in _string_list_attr(root, "layer_names"):
            group = root[layer]
            weights = {}
            for full in _string_list_attr(group, "weight_names"):
                # "conv1_conv/kernel:0" (Keras 2) or "conv1_conv/kernel" (Keras 3) -> "kernel"
                short = full.rsplit("/", 1)[-1].split(":", 1)[0]
                if short in weights:
                    raise KerasWeightsError(f"layer {layer!r} has two weights named {short!r}")
                weights[short] = np.asarray(group[full])
            if weights:
                layers[layer] = weights
    if not layers:
        raise KerasWeightsError(f"{path} holds no Keras layer weights (no 'layer_names' attribute?)")
    return layers


def _string_list_attr(group, name: str) -> list[str]:
    # Keras splits attributes over 64 KB into name0, name1, ... (save_attributes_to_hdf5_group).
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _torch_tensors(layer: str, module: nn.Module, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras weights of one layer -> {PyTorch parameter/buffer name: array in PyTorch's layout}."""
    if isinstance(module, nn.Conv2d):
        names = {"kernel": "weight", "bias": "bias"}
        # Keras kernels are (H, W, in, out); PyTorch wants (out, in, H, W).
        convert = {"kernel": lambda a: a.transpose(3, 2, 0, 1)}
    elif isinstance(module, nn.BatchNorm2d):
        names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
        convert = {}
    elif isinstance(module, nn.Linear):
        names = {"kernel": "weight", "bias": "bias"}
        convert = {"kernel": lambda a: a.T}  # (in, out) -> (out, in)
    else:
        raise KerasWeightsError(f"no Keras mapping for {type(module).__name__} (layer {layer!r})")
    expected = {k for k, v in names.items() if getattr(module, v, None) is not None}
    if set(weights) != expected:
        raise KerasWeightsError(f"layer {layer!r}: file has {sorted(weights)}, model needs {sorted(expected)}")
    return {names[k]: convert.get(k, lambda a: a)(v) for k, v in weights.items()}


def load_keras_h5(path: str | os.PathLike, layers: Iterable[tuple[str, nn.Module]]) -> None:
    """Copy a Keras HDF5 weights file into ``layers`` ((Keras layer name, module) pairs), all or nothing."""
    file_layers = read_keras_h5(path)
    model_layers = dict(layers)
    missing = sorted(set(model_layers) - set(file_layers))
    extra = sorted(set(file_layers) - set(model_layers))
    if missing or extra:
        raise KerasWeightsError(
            f"{path} does not fit the model: missing layers {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected layers {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    # Convert and check every shape before touching the model, so a bad file leaves it unchanged.
    staged: list[tuple[torch.Tensor, np.ndarray]] = []
    for layer, module in model_layers.items():
        for attr, value in _torch_tensors(layer, module, file_layers[layer]).items():
            target = getattr(module, attr)
            if tuple(target.shape) != value.shape:
                raise KerasWeightsError(
                    f"layer {layer!r} {attr}: file shape {value.shape}, model shape {tuple(target.shape)}"
                )
            staged.append((target, value))
    with torch.no_grad():
        for target, value in staged:
            target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def load_resnet50v2_imagenet(model: nn.Module, path: str | os.PathLike | None = None) -> Path:
    """Load Keras' ImageNet ResNet50V2 (notop) into ``model`` (a ``ResNet50V2``); returns the file used."""
    weights = resolve_resnet50v2_weights(path)
    load_keras_h5(weights, cast(Any, model).keras_layers())  # a ResNet50V2: nn.Module's type cannot say so
    return weights
