"""Average the weights of mask classifiers fine-tuned from one start (a "model soup"), into one ONNX file.

Classifiers fine-tuned from the same ImageNet weights with different settings (input size, schedule) end in
one basin of the loss, and the mean of their weights often ranks faces better than either of them
(Wortsman et al., 2022, "Model soups"). Measured here (MODEL_CARD.md): the mean of the 128 px and the 160 px
three-class models ranks masked against bare scene faces better than both (ROC AUC 0.9964 against 0.9947 and
0.9960) at no cost at inference: it is one network of the same size.

The exported files are averaged as they are: their initializers (convolutions with their batch norm folded
in, the head's dense layers) are averaged name by name. Only files with the same labels, backbone, head,
normalisation and crop margin, and the same initializer names and shapes, can be averaged. The network
(and so the input size) is the first file's: the weights of these backbones do not depend on the input size.
The operating point is chosen again, by training's rule (``choose_operating_point``), on the annotated
validation faces of a scene set, each cut by the one crop function of inference.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from maskwatch.classifier.onnx_classifier import METADATA_KEY, MaskClassifier
from maskwatch.crops import face_crop
from maskwatch.images import ImageError, load_image
from maskwatch.model_files import atomic_file, sha256_of
from maskwatch.training.augment import resize_to
from maskwatch.training.data import Sample, read_split, scan_scenes, split_file_fingerprint
from maskwatch.training.face_cache import run_crop_cache
from maskwatch.training.metrics import classification_report
from maskwatch.training.operating_point import choose_operating_point, two_class_accuracy

MODEL_NAME = "mask_classifier.onnx"
# What every averaged file must share: a mean of weights means nothing across different nets or inputs.
SAME_IN_EVERY_FILE = ("labels", "backbone", "head", "output", "channel_order", "mean", "std", "crop_margin")
# Training facts that stay true of the average when every file agrees on them.
KEPT_WHEN_EQUAL = ("data_fingerprint", "split_fingerprint", "split_counts", "face_threshold", "normalisation")


def model_file(path: str | Path) -> Path:
    """A model file, or a run folder's (``maskwatch train --out``)."""
    path = Path(path)
    return path / MODEL_NAME if path.is_dir() else path


def read_metadata(path: Path) -> dict[str, Any]:
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path}: no maskwatch metadata (not a file written by `maskwatch train`)")
    return json.loads(props[METADATA_KEY])


def average_weights(paths: Sequence[Path], weights: Sequence[float] | None = None) -> onnx.ModelProto:
    """The first file's network with every initializer the (weighted) mean of the files' initializers."""
    if len(paths) < 2:
        raise ValueError("give at least two models to average")
    weights = [1.0 / len(paths)] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths) or min(weights) < 0 or not np.isclose(sum(weights), 1.0):
        raise ValueError(f"--weights: one non-negative weight per model, summing to 1 (got {weights})")
    metadata = [read_metadata(p) for p in paths]
    for key in SAME_IN_EVERY_FILE:
        values = {json.dumps(m.get(key), sort_keys=True) for m in metadata}
        if len(values) > 1:
            raise ValueError(f"the models differ in {key!r} ({', '.join(sorted(values))}): they cannot be averaged")
    base = onnx.load(str(paths[0]))
    tensors = [{t.name: numpy_helper.to_array(t) for t in onnx.load(str(p)).graph.initializer} for p in paths]
    for path, named in zip(paths[1:], tensors[1:], strict=True):
        shapes = {k: v.shape for k, v in named.items()}
        if shapes != {k: v.shape for k, v in tensors[0].items()}:
            raise ValueError(f"{path} has other weights (names or shapes) than {paths[0]}: not the same network")
    for init in base.graph.initializer:
        first = tensors[0][init.name]
        if not np.issubdtype(first.dtype, np.floating):
            continue  # shapes and indices, not weights
        mean = sum(w * t[init.name].astype(np.float64) for w, t in zip(weights, tensors, strict=True))
        init.CopyFrom(numpy_helper.from_array(np.asarray(mean).astype(first.dtype), init.name))
    return base


def scene_face_probabilities(classifier: MaskClassifier, scenes: Path, split: str | None
                             ) -> tuple[np.ndarray, np.ndarray, int]:
    """Class probabilities and label indices of the annotated faces of a scene set's split, and the image count.

    The faces training chooses its operating point on (``scan_scenes``: boxes of 8 px and up), each cut by
    ``face_crop`` at the model's input size, as inference cuts it; classes the model does not know are skipped.
    """
    samples, _ = scan_scenes(scenes)
    by_image: dict[Path, list[Sample]] = defaultdict(list)
    for sample in samples:
        if (split is None or sample.split == split) and sample.label in classifier.labels:
            by_image[sample.path].append(sample)
    probabilities, labels, images = [], [], 0
    for path, faces in sorted(by_image.items()):
        try:
            image = load_image(path)
        except ImageError:
            continue
        images += 1
        crops = [face_crop(image, face.box or (0, 0, 0, 0), classifier.input_size, classifier.crop_margin)
                 for face in faces]
        probabilities.append(classifier.probabilities(crops))
        labels += [classifier.labels.index(face.label) for face in faces]
    if not labels:
        raise ValueError(f"no annotated faces of the model's classes in {scenes} (split {split})")
    return np.concatenate(probabilities), np.array(labels, int), images


def average_models(models: Sequence[str | Path], out: str | Path, scenes: str | Path, split: str | None = "val",
                   weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Average ``models`` (files or run folders) into ``out``/mask_classifier.onnx, with its operating point
    chosen on ``scenes``' ``split`` and its metadata; returns the report (also written as ``average.json``).

    When the first model is a run folder, its ``split.csv`` and ``report.json`` come along, the test split
    cut down to the photos no averaged model trained on, so that ``maskwatch evaluate OUT`` re-scores a fair
    test split; the paper's two-class protocol there, for the average and for each model, goes into the
    metadata too.
    """
    paths = [model_file(m) for m in models]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no model file {path}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    proto = average_weights(paths, weights)
    sources = [read_metadata(p) for p in paths]
    metadata = _metadata(sources[0], sources, paths, weights)
    _set_metadata(proto, metadata)
    with tempfile.TemporaryDirectory() as tmp:
        draft = Path(tmp) / MODEL_NAME
        onnx.save(proto, str(draft))
        classifier = MaskClassifier(draft)
        probabilities, y, images = scene_face_probabilities(classifier, Path(scenes), split)
        point, search = choose_operating_point(probabilities, y, classifier.labels)
        search["chosen_on"] = f"annotated faces of {scenes} (split {split}, {images} images, crops as inference)"
        metadata["operating_point"] = {**point.to_dict(), "search": search}
        _set_metadata(proto, metadata)
        onnx.save(proto, str(draft))  # the test figures are taken at the new operating point
        test = _test_figures(models, paths, sources, out, draft)
        if test:
            metadata.update(test)
    _set_metadata(proto, metadata)
    with atomic_file(out / MODEL_NAME) as handle:
        handle.write(proto.SerializeToString())
    report = {"model": str(out / MODEL_NAME), "sha256": sha256_of(out / MODEL_NAME), "metadata": metadata}
    (out / "average.json").write_text(json.dumps(report, indent=2))
    return report


def _metadata(base: dict, sources: list[dict], paths: Sequence[Path], weights: Sequence[float] | None
              ) -> dict[str, Any]:
    metadata = {key: base[key] for key in (*SAME_IN_EVERY_FILE, "input_size") if key in base}
    for key in KEPT_WHEN_EQUAL:
        values = [json.dumps(s.get(key), sort_keys=True) for s in sources]
        if key in base and len(set(values)) == 1:
            metadata[key] = base[key]
    shares = [1.0 / len(paths)] * len(paths) if weights is None else list(weights)
    metadata["backbone_weights"] = "the mean of the averaged models' weights (maskwatch average)"
    metadata["averaged_from"] = [
        {"file": path.name, "sha256": sha256_of(path), "weight": share, "input_size": s.get("input_size"),
         "trained": s.get("trained"), "split_fingerprint": s.get("split_fingerprint"),
         "backbone_weights": s.get("backbone_weights"),
         "maskwatch_train_config": s.get("maskwatch_train_config")}
        for path, s, share in zip(paths, sources, shares, strict=True)]
    metadata["trained"] = time.strftime("%Y-%m-%d")
    return metadata


def _set_metadata(proto: onnx.ModelProto, metadata: dict) -> None:
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    proto.producer_name = "maskwatch"


def _member_split(model: str | Path, metadata: dict) -> dict[str, str] | None:
    """sha256 -> split of a run folder's ``split.csv`` (None for a bare file), checked against the model's own
    split fingerprint, so that a split from another run cannot pass for this model's."""
    run = Path(model)
    if not (run.is_dir() and (run / "split.csv").is_file()):
        return None
    digest, split = split_file_fingerprint(run / "split.csv")
    if metadata.get("split_fingerprint") not in (None, digest):
        raise ValueError(f"{run / 'split.csv'} is not the split that {run / MODEL_NAME} was trained on "
                         "(its split fingerprint differs)")
    return split


def _test_figures(models: Sequence[str | Path], paths: Sequence[Path], sources: list[dict], out: Path,
                  averaged: Path) -> dict[str, Any]:
    """The paper's protocol on the test photos of every averaged model, for the average and for each model.

    A photo counts only if no model trained on it: models split apart (another face detector cut the crops
    that group near-copies, say) put different photos in their test splits. Needs the first model's run
    folder (its report.json says where the data and crops are); photos of a model given as a bare file
    count only if its split fingerprint is the first model's. Returns {} when no test photo is left.
    """
    run = Path(models[0])
    if not (run.is_dir() and (run / "report.json").is_file() and (run / "split.csv").is_file()):
        return {}
    splits = [_member_split(m, meta) for m, meta in zip(models, sources, strict=True)]
    for model, split, meta in zip(models, splits, sources, strict=True):
        if split is None and meta.get("split_fingerprint") != sources[0].get("split_fingerprint"):
            print(f"{model}: no split.csv and another split than {run}: no test figures", file=sys.stderr)
            return {}
    report = json.loads((run / "report.json").read_text())
    config = report["config"]
    roots = [Path(p) for p in [config["data_dir"], *config.get("extra_data", [])]]
    test = [s for s in read_split(run / "split.csv", roots)
            if s.split == "test" and all(split is None or split.get(s.sha256) == "test" for split in splits)]
    cache = run_crop_cache(config)
    records = cache.build(test)
    test = [s for s in test if not records[s.sha256].error]
    if not test:
        return {}
    crops = [cache.load(s.sha256) for s in test]
    keep = {s.sha256 for s in test}
    with open(run / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:  # out's split.csv: what no model trained on stays test, so `maskwatch evaluate OUT` is fair
        if row["split"] == "test" and row["sha256"] not in keep:
            row["split"] = "excluded"
    with open(out / "split.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    by_model = []
    for name, path in [("average", averaged), *((str(m), p) for m, p in zip(models, paths, strict=True))]:
        classifier = MaskClassifier(path)
        y = np.array([classifier.labels.index(s.label) for s in test], int)
        views = [resize_to(crop, classifier.input_size) for crop in crops]  # training's clean view
        probabilities = np.concatenate([classifier.probabilities(views[i:i + 64]) for i in range(0, len(views), 64)])
        figures = {"model": name, "accuracy": float((probabilities.argmax(1) == y).mean()),
                   "two_class_accuracy": two_class_accuracy(probabilities, y, classifier.labels,
                                                            classifier.operating_point)}
        by_model.append(figures)
        if name == "average":
            report["test"] = classification_report(y, probabilities.argmax(1), classifier.labels)
            report["averaged_from"] = [str(m) for m in models]
            (out / "report.json").write_text(json.dumps(report, indent=2))
    return {"test_accuracy": by_model[0]["accuracy"], "test_two_class_accuracy": by_model[0]["two_class_accuracy"],
            "test_photos": len(test), "test_by_model": by_model,
            "test_photos_are": "the test photos of every averaged model's split (never trained on by any)"}
