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

import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from maskwatch.classifier.onnx_classifier import METADATA_KEY, MODEL_FILE_NAME, MaskClassifier
from maskwatch.crops import face_crop
from maskwatch.images import ImageError, load_image
from maskwatch.labels import WITHOUT_MASK
from maskwatch.model_files import atomic_file, sha256_of
from maskwatch.training.augment import hand_over_mouth_view, resize_to
from maskwatch.training.data import (
    Sample,
    read_run_report,
    read_split,
    scan_scenes,
    split_file_fingerprint,
    write_split,
)
from maskwatch.training.face_cache import run_crop_cache
from maskwatch.training.metrics import classification_report
from maskwatch.training.operating_point import choose_operating_point, two_class_accuracy

# What every averaged file must share: a mean of weights means nothing across different nets or inputs.
SAME_IN_EVERY_FILE = ("labels", "backbone", "head", "output", "channel_order", "mean", "std", "crop_margin")
# Training facts that stay true of the average when every file agrees on them (the split's only if every
# model was split alike).
KEPT_WHEN_EQUAL = ("data_fingerprint", "face_threshold", "normalisation")
KEPT_WHEN_SPLIT_ALIKE = ("split_fingerprint", "split_counts")
# Photos that a model of the average trained on are marked so in the average's split.csv: neither test nor val.
EXCLUDED = "excluded"


def model_file(path: str | Path) -> Path:
    """A model file, or a run folder's (``maskwatch train --out``)."""
    path = Path(path)
    return path / MODEL_FILE_NAME if path.is_dir() else path


def load_model(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except (DecodeError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable ONNX model ({exc})") from exc


def read_metadata(model: onnx.ModelProto, path: Path) -> dict[str, Any]:
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path}: no maskwatch metadata (not a file written by `maskwatch train`)")
    try:
        return dict(json.loads(props[METADATA_KEY]))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: its maskwatch metadata is not a JSON object") from exc


def equal_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """``weights`` checked (one per model, non-negative, summing to 1), or the plain mean's."""
    chosen = [1.0 / count] * count if weights is None else [float(w) for w in weights]
    if len(chosen) != count or min(chosen) < 0 or not np.isclose(sum(chosen), 1.0):
        raise ValueError(f"--weights: one non-negative weight per model, summing to 1 (got {chosen})")
    return chosen


def average_weights(paths: Sequence[Path], weights: Sequence[float] | None = None
                    ) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """The first file's network with every initializer the (weighted) mean of the files' initializers, and
    each file's maskwatch metadata."""
    if len(paths) < 2:
        raise ValueError("give at least two models to average")
    shares = equal_weights(len(paths), weights)
    models = [load_model(p) for p in paths]
    metadata = [read_metadata(m, p) for m, p in zip(models, paths, strict=True)]
    for key in SAME_IN_EVERY_FILE:
        values = {json.dumps(m.get(key), sort_keys=True) for m in metadata}
        if len(values) > 1:
            raise ValueError(f"the models differ in {key!r} ({', '.join(sorted(values))}): they cannot be averaged")
    return mean_of_initializers(models, paths, shares), metadata


def mean_of_initializers(models: Sequence[onnx.ModelProto], paths: Sequence[Path],
                         shares: Sequence[float]) -> onnx.ModelProto:
    """The first model, its float initializers replaced by the ``shares``-weighted mean of every model's.

    The models must be one network: the same initializer names and shapes (checked), and no file twice (the
    mean of a model with itself is that model: a wrong path, not a soup). Integer initializers (shapes,
    indices) are the first model's.
    """
    seen: dict[str, Path] = {}
    for path in paths:
        digest = sha256_of(path)
        if digest in seen:
            raise ValueError(f"{seen[digest]} and {path} are the same model (sha256 {digest[:12]}…): "
                             "average different fine-tunes")
        seen[digest] = path
    tensors = [{t.name: numpy_helper.to_array(t) for t in m.graph.initializer} for m in models]
    for path, named in zip(paths[1:], tensors[1:], strict=True):
        shapes = {k: v.shape for k, v in named.items()}
        if shapes != {k: v.shape for k, v in tensors[0].items()}:
            raise ValueError(f"{path} has other weights (names or shapes) than {paths[0]}: not the same network")
    base = models[0]
    for init in base.graph.initializer:
        first = tensors[0][init.name]
        if not np.issubdtype(first.dtype, np.floating):
            continue  # shapes and indices, not weights
        mean = sum(w * t[init.name].astype(np.float64) for w, t in zip(shares, tensors, strict=True))
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

    When the first model is a run folder, its ``split.csv`` and ``report.json`` come along, with every photo
    that some averaged model trained on marked "excluded", so that ``maskwatch evaluate OUT`` re-scores a fair
    test split; the paper's two-class protocol on those test photos, for the average and for each model, goes
    into the metadata too. Nothing is written until every check has passed; each file is replaced whole.
    """
    paths = [model_file(m) for m in models]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no model file {path}")
    out = Path(out)
    inputs = {p.resolve() for p in paths} | {p.resolve().parent for p in paths}
    if out.resolve() in inputs:
        raise ValueError(f"--out {out} holds a model being averaged: choose a new folder")
    if trained := [name for name in ("history.csv", "head.pt", "backbone.pt") if (out / name).exists()]:
        # A mean written there would sit beside another model's weights, plots and evaluation.
        raise ValueError(f"--out {out} holds a training run ({', '.join(trained)}): choose a new folder")
    proto, sources = average_weights(paths, weights)
    metadata = _metadata(sources, models, paths, equal_weights(len(paths), weights))
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        draft = Path(tmp) / MODEL_FILE_NAME
        _set_metadata(proto, metadata)
        onnx.save(proto, str(draft))
        classifier = MaskClassifier(draft)
        probabilities, y, images = scene_face_probabilities(classifier, Path(scenes), split)
        point, search = choose_operating_point(probabilities, y, classifier.labels)
        search["chosen_on"] = f"annotated faces of {scenes} (split {split}, {images} images, crops as inference)"
        metadata["operating_point"] = {**point.to_dict(), "search": search}
        classifier.operating_point = point  # the test figures are taken at the new operating point
        test, files, run_report = _test_figures(models, paths, sources, classifier, Path(tmp))
        metadata.update(test)
    if run_report is not None:  # the run report of the average, with its metadata and operating point
        run_report.update(metadata=metadata, operating_point=metadata["operating_point"])
        files["report.json"] = json.dumps(run_report, indent=2).encode()
    _set_metadata(proto, metadata)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("split.csv", "report.json"):
        if stale not in files:
            (out / stale).unlink(missing_ok=True)  # a previous average's, which would not match this model
    for name, data in [*files.items(), (MODEL_FILE_NAME, proto.SerializeToString())]:
        with atomic_file(out / name) as handle:
            handle.write(data)
    report = {"model": str(out / MODEL_FILE_NAME), "sha256": sha256_of(out / MODEL_FILE_NAME), "metadata": metadata}
    with atomic_file(out / "average.json") as handle:
        handle.write(json.dumps(report, indent=2).encode())
    return report


def _metadata(sources: list[dict], models: Sequence[str | Path], paths: Sequence[Path],
              shares: Sequence[float]) -> dict[str, Any]:
    base = sources[0]
    metadata = {key: base[key] for key in (*SAME_IN_EVERY_FILE, "input_size") if key in base}
    split_alike = len({s.get("split_fingerprint") for s in sources}) == 1
    for key in KEPT_WHEN_EQUAL + (KEPT_WHEN_SPLIT_ALIKE if split_alike else ()):
        values = [json.dumps(s.get(key), sort_keys=True) for s in sources]
        if key in base and len(set(values)) == 1:
            metadata[key] = base[key]
    metadata["backbone_weights"] = "the mean of the averaged models' weights (maskwatch average)"
    metadata["averaged_from"] = [
        member for model, path, s, share in zip(models, paths, sources, shares, strict=True)
        for member in _members(model, path, s, share)]
    metadata["trained"] = time.strftime("%Y-%m-%d")
    return metadata


def _members(model: str | Path, path: Path, source: dict, share: float) -> list[dict[str, Any]]:
    """The ``averaged_from`` entries of one averaged model: the model itself, or, when it is a mean already,
    its own members with their weights times ``share`` (``via``: the means they came through, outermost
    first), so that the entries always list trained networks, their training configurations and their splits."""
    via = {"model": str(model), "sha256": sha256_of(path)}
    if source.get("averaged_from"):
        return [{**member, "weight": member["weight"] * share, "via": [via, *member.get("via", [])]}
                for member in source["averaged_from"]]
    return [{**via, "weight": share, "input_size": source.get("input_size"), "trained": source.get("trained"),
             "split_fingerprint": source.get("split_fingerprint"), "backbone_weights": source.get("backbone_weights"),
             "maskwatch_train_config": source.get("maskwatch_train_config")}]


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
    try:
        digest, split = split_file_fingerprint(run / "split.csv")
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"{run / 'split.csv'}: not a split file written by `maskwatch train` ({exc})") from exc
    if metadata.get("split_fingerprint") != digest:
        raise ValueError(f"{run / 'split.csv'} is not the split that {run / MODEL_FILE_NAME} was trained on "
                         "(its split fingerprint differs, or the model has none)")
    return split


# What a run's report.json says of that run's own model alone: an average's report.json, made from the first
# model's, keeps them under "first_model_figures".
FIRST_MODEL_FIGURES = (
    "val_by_source", "test_by_face_px", "test_bare_with_hand_accuracy", "test_bare_with_painted_mask_accuracy",
    "test_bare_with_mask_painted_below_nose_accuracy", "finetune", "epochs", "best_epoch", "seconds", "machine",
    "model", "test_two_class_accuracy", "operating_point", "metadata",
)


def _test_figures(models: Sequence[str | Path], paths: Sequence[Path], sources: list[dict],
                  averaged: MaskClassifier, scratch: Path
                  ) -> tuple[dict[str, Any], dict[str, bytes], dict[str, Any] | None]:
    """The paper's protocol on the test photos of every averaged model, for the average and for each model;
    the average's ``split.csv`` (as bytes) and its run report (``report.json``: the caller adds the metadata
    and writes both).

    A photo counts only if no model trained on it: models split apart (another face detector cut the crops
    that group near-copies, say) put different photos in their test splits. Needs the first model's run
    folder (its report.json says where the data and crops are); a model given as a bare file counts only if
    it has the first model's split fingerprint. Without any of that: no figures, and ``test_figures`` says why.
    """
    run = Path(models[0])
    if not (run.is_dir() and (run / "report.json").is_file() and (run / "split.csv").is_file()):
        return {"test_figures": "none: the first model is not a run folder with report.json and split.csv"}, {}, None
    splits = [_member_split(m, meta) for m, meta in zip(models, sources, strict=True)]
    for model, member, meta in zip(models, splits, sources, strict=True):
        if member is None and meta.get("split_fingerprint") != sources[0].get("split_fingerprint"):
            return {"test_figures": f"none: {model} has no split.csv and was split otherwise than {run}"}, {}, None
    try:
        report = read_run_report(run)
        config = report["config"]
        roots = [Path(p) for p in [config["data_dir"], *config.get("extra_data", [])]]
        samples = read_split(run / "split.csv", roots)
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise ValueError(f"{run}: not a run folder written by `maskwatch train` ({exc})") from exc

    def unseen(sample: Sample, kind: str) -> bool:  # ``kind`` in every split that knows the photo
        return all(member is None or member.get(sample.sha256, kind) == kind for member in splits)

    test = [s for s in samples if s.split == "test" and unseen(s, "test")]
    cache = run_crop_cache(config)
    records = cache.build(test)
    test = [s for s in test if not records[s.sha256].error]
    if not test:
        return {"test_figures": "none: no test photo is a test photo of every averaged model"}, {}, None
    crops = [cache.load(s.sha256) for s in test]
    kept = {s.sha256 for s in test}
    for sample in samples:
        # What some averaged model trained on is neither test nor val of the average (evaluate, calibrate).
        if (sample.split == "test" and sample.sha256 not in kept) or (sample.split == "val"
                                                                       and not unseen(sample, "val")):
            sample.split = EXCLUDED
    write_split(samples, roots, scratch / "split.csv")
    by_model = []
    hand: float | None = None
    for name, classifier in [("average", averaged),
                             *((str(m), MaskClassifier(p)) for m, p in zip(models, paths, strict=True))]:
        y = np.array([classifier.labels.index(s.label) for s in test], int)
        views = [resize_to(crop, classifier.input_size) for crop in crops]  # training's clean view
        probabilities = np.concatenate([classifier.probabilities(views[i:i + 64]) for i in range(0, len(views), 64)])
        by_model.append({"model": name, "accuracy": float((probabilities.argmax(1) == y).mean()),
                         "two_class_accuracy": two_class_accuracy(probabilities, y, classifier.labels,
                                                                  classifier.operating_point)})
        if name == "average":
            report["test"] = classification_report(y, probabilities.argmax(1), classifier.labels)
            hand = _bare_with_hand_accuracy(classifier, test, crops)
    report["averaged_from"] = [str(m) for m in models]
    # The first model's own figures are not the average's: kept apart, and the average's put in their place.
    report["first_model_figures"] = {key: report.pop(key) for key in FIRST_MODEL_FIGURES if key in report}
    report["test_two_class_accuracy"] = by_model[0]["two_class_accuracy"]
    report["test_bare_with_hand_accuracy"] = hand
    files = {"split.csv": (scratch / "split.csv").read_bytes()}
    test_figures = {
        "test_accuracy": by_model[0]["accuracy"], "test_two_class_accuracy": by_model[0]["two_class_accuracy"],
        "test_bare_with_hand_accuracy": hand, "test_photos": len(test), "test_by_model": by_model,
        "test_photos_are": "the test photos of every averaged model's split (never trained on by any)",
    }
    return test_figures, files, report


def _bare_with_hand_accuracy(classifier: MaskClassifier, test: list[Sample], crops: list[np.ndarray]
                             ) -> float | None:
    """Training's hand measure for the average: the share of bare test faces with a hand over the mouth (the
    same hands as ``maskwatch train`` scores) still called ``without_mask`` (argmax); None without bare faces."""
    bare = [i for i, s in enumerate(test) if s.label == WITHOUT_MASK]
    if not bare:
        return None
    views = [resize_to(hand_over_mouth_view(crops[i], test[i].sha256), classifier.input_size) for i in bare]
    probabilities = np.concatenate([classifier.probabilities(views[i:i + 64]) for i in range(0, len(views), 64)])
    return float((probabilities.argmax(1) == classifier.labels.index(WITHOUT_MASK)).mean())
