"""Average the weights of YuNet face models: a fine-tuned model and the stock weights it started from.

Fine-tuning YuNet on the faces of `mask-scenes` taught it masked and small faces and cost it some of what the
stock weights knew: more false faces in photos with no one in them, and a box drawn between the annotators'
styles. The weights of a fine-tuned model and of its start lie in one basin, and a point on the line between
them often keeps most of both (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models", WiSE-FT).
Measured here (MODEL_CARD.md, the face detector's card): 0.7 of `detector-v7` and 0.3 of the stock weights
keeps `detector-v7`'s synthetic-scene recall and bare faces, with the face-free photos of the model shipped
before it.

The files are averaged as they are, initializer by initializer (``training.average.mean_of_initializers``);
they must be one network (the same initializer names and shapes, checked). The first file must be one that
`maskwatch train-detector` wrote: its graph (with free input height and width) and its training facts are
kept, with the averaged files and their weights added. Its val figures and photo defaults are dropped here:
they describe the first file, not the average, and the caller chooses them again (``maskwatch average``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from maskwatch.faces.yunet import (
    FACE_MODEL_FILE_NAME,
    METADATA_EXTRA_PASS_MAX_FACE,
    METADATA_EXTRA_SCALES,
    METADATA_MIRROR_EXTRA_PASSES,
    METADATA_SCORE_THRESHOLD,
)
from maskwatch.model_files import atomic_file, sha256_of
from maskwatch.training.average import equal_weights, load_model, mean_of_initializers

KIND_KEY, KIND = "maskwatch.kind", "face_detector"
AVERAGED_FROM_KEY = "maskwatch.averaged_from"
# Facts of the first file that are not true of the average: chosen or measured again, or dropped.
NOT_TRUE_OF_THE_AVERAGE = ("maskwatch.val_loss", "maskwatch.start_val_loss", "maskwatch.best_epoch",
                           "maskwatch.val_figures", METADATA_SCORE_THRESHOLD, METADATA_EXTRA_SCALES,
                           METADATA_MIRROR_EXTRA_PASSES, METADATA_EXTRA_PASS_MAX_FACE)


def detector_file(path: str | Path) -> Path:
    """A face model file, or a run folder's (``maskwatch train-detector --out``)."""
    path = Path(path)
    return path / FACE_MODEL_FILE_NAME if path.is_dir() else path


def is_face_detector(path: str | Path) -> bool:
    """Whether ``path`` (a file or run folder) holds a face model that `maskwatch train-detector` wrote."""
    file = detector_file(path)
    if not file.is_file():
        return False
    try:
        return _metadata(onnx.load(str(file), load_external_data=False)).get(KIND_KEY) == KIND
    except (DecodeError, OSError, ValueError):  # not an ONNX file: the caller reports what it expected
        return False


def average_detectors(paths: Sequence[Path], names: Sequence[str],
                      weights: Sequence[float] | None = None) -> onnx.ModelProto:
    """The (``weights``-weighted) mean of the face models ``paths``, with its metadata (checked, not written).

    ``names``: how the caller named each model (kept in the metadata beside its sha256).
    """
    if len(paths) < 2:
        raise ValueError("give at least two models to average")
    shares = equal_weights(len(paths), weights)
    models = [load_model(p) for p in paths]
    first = _metadata(models[0])
    if first.get(KIND_KEY) != KIND:
        raise ValueError(f"{paths[0]}: the first model must be a face model written by `maskwatch train-detector` "
                         "(its graph and training facts are kept); put the stock YuNet after it")
    for path, model in zip(paths[1:], models[1:], strict=True):
        if [n.op_type for n in model.graph.node] != [n.op_type for n in models[0].graph.node]:
            raise ValueError(f"{path} is not the same network as {paths[0]} (its layers differ)")
    proto = mean_of_initializers(models, paths, shares)
    metadata = {k: v for k, v in first.items() if k not in NOT_TRUE_OF_THE_AVERAGE}
    metadata[AVERAGED_FROM_KEY] = json.dumps([
        {"model": str(name), "sha256": sha256_of(path), "weight": share,
         "training": json.loads(_metadata(model).get("maskwatch.training", "null"))}
        for name, path, model, share in zip(names, paths, models, shares, strict=True)])
    write_metadata(proto, metadata)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"the mean of {', '.join(map(str, names))} is not a valid ONNX model: {exc}") from exc
    return proto


def save_detector(proto: onnx.ModelProto, out: str | Path) -> Path:
    """Write ``proto`` whole (never a partial file) to ``out``/face_detector.onnx; returns the file."""
    target = Path(out) / FACE_MODEL_FILE_NAME
    with atomic_file(target) as handle:
        handle.write(proto.SerializeToString())
    return target


def write_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace the model's metadata with ``metadata`` (string values)."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=str(value))


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
