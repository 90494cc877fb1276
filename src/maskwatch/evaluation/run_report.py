"""``maskwatch evaluate RUN_DIR``: re-score a training run's test split with the ONNX file it exported.

The crops come from the run's face-crop cache and go through the same views as in
training (the clean crop resized to the model input, and the 16/24/32/48 px views),
but the scores come from onnxruntime on ``mask_classifier.onnx``: what is evaluated
is the file that ships, not the PyTorch head that trained it.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskwatch.classifier.onnx_classifier import MODEL_FILE_NAME, MaskClassifier
from maskwatch.evaluation import plots
from maskwatch.evaluation.appearance import APPEARANCES, mask_appearance
from maskwatch.evaluation.calibration import CALIBRATED_NAME, write_calibrated_model
from maskwatch.evaluation.common import fmt, markdown_table
from maskwatch.labels import WITH_MASK
from maskwatch.training.augment import EVAL_FACE_SIZES, as_small_face, resize_to
from maskwatch.training.data import Sample, read_run_report, read_split
from maskwatch.training.face_cache import FaceCropCache, run_crop_cache
from maskwatch.training.metrics import (
    ECE_BINS,
    TEMPERATURE_RANGE,
    apply_temperature,
    calibration_bins,
    classification_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    roc_auc,
    roc_curve,
)
from maskwatch.training.operating_point import two_class_accuracy, two_class_by_mask_threshold

SHEET_NAME = "misclassified.png"
# The contact sheet shows at most this many mistakes, the most confident first: a bad model on a big test
# split would otherwise make an image of thousands of tiles.
SHEET_LIMIT = 64
ECE_DEFINITION = (f"expected calibration error: top-label confidence in {ECE_BINS} equal-width bins over [0, 1], "
                  "sum of (share of images in bin) x |accuracy - mean confidence|")
BATCH = 64


@dataclass
class RunData:
    """A run's model and its readable validation and test images, with their cached crops."""

    run: Path
    report: dict
    classifier: MaskClassifier
    data_root: Path
    cache: FaceCropCache
    records: dict
    test: list[Sample]
    val: list[Sample]
    unreadable: int
    crops: dict[str, np.ndarray]  # test crops, kept in memory: five views each, and the contact sheet

    def crop(self, sample: Sample) -> np.ndarray:
        return self.crops[sample.sha256] if sample.sha256 in self.crops else self.cache.load(sample.sha256)

    def y(self, samples: list[Sample]) -> np.ndarray:
        return np.array([self.classifier.labels.index(s.label) for s in samples], int)

    def score(self, samples: list[Sample], view: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return _probabilities(self.classifier, [view(self.crop(s)) for s in samples])


def write_evaluation(run_dir: str | Path, *, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                     face_model: str | Path | None = None, calibrate: bool = False) -> dict:
    """Score the run's test split, write evaluation.md / .json and the plots into ``run_dir``; return the JSON.

    ``data_dir``, ``cache_dir`` and ``face_model`` default to what the run's report.json recorded;
    with ``calibrate`` a temperature-scaled copy of the model is written as well (when the fit is usable).
    """
    data = load_run(Path(run_dir), data_dir, cache_dir, face_model)
    result, probs = _test_scores(data)
    if data.val:
        result["calibration"] = _calibration(data, probs)
        if calibrate and result["calibration"]["usable"]:
            result["calibrated_model"] = _write_calibrated(data, result["calibration"])
    result["misclassified"] = _misclassified(data, probs["clean"])
    result["history"] = _read_history(data.run / "history.csv")
    result["plots"] = _plots(data.run, result, [data.crops[s.sha256] for s in data.test], data.classifier.labels)
    (data.run / "evaluation.json").write_text(dumps_json(result))
    (data.run / "evaluation.md").write_text(render_markdown(result))
    return result


def json_safe(value: object) -> object:
    """``value`` with every NaN or infinity (a ROC AUC of a one-class split...) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.floating):
        return json_safe(float(value))
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def dumps_json(result: dict) -> str:
    """Strict JSON (no NaN, which most parsers refuse), as evaluation.json and --json are written."""
    return json.dumps(json_safe(result), indent=2, allow_nan=False)


def load_run(run: Path, data_dir: str | Path | None, cache_dir: str | Path | None,
             face_model: str | Path | None) -> RunData:
    report = read_run_report(run)
    config = report["config"]
    classifier = MaskClassifier(run / MODEL_FILE_NAME)
    if classifier.labels != report["labels"]:
        raise ValueError(f"{run / MODEL_FILE_NAME} has labels {classifier.labels}, the run {report['labels']}")
    roots = [Path(p) for p in [config["data_dir"], *config.get("extra_data", [])]]
    if data_dir:
        roots[0] = Path(data_dir)
    data_root = roots[0]
    cache = run_crop_cache(config, cache_dir, face_model)
    samples = [s for s in read_split(run / "split.csv", roots) if s.split in ("val", "test")]
    records = _build_crops(cache, samples, data_root)
    readable = [s for s in samples if not records[s.sha256].error]
    test = [s for s in readable if s.split == "test"]
    if not test:
        raise ValueError(f"{run / 'split.csv'} has no readable test images")
    return RunData(run, report, classifier, data_root, cache, records, test,
                   [s for s in readable if s.split == "val"], len(samples) - len(readable),
                   {s.sha256: cache.load(s.sha256) for s in test})


def _small_view(crop: np.ndarray, px: int, size: int, margin: float) -> np.ndarray:
    return as_small_face(crop, px, size, margin)


def views(classifier: MaskClassifier) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Training's evaluation views of a cached crop: the clean crop at the model input, and each face size."""
    size, margin = classifier.input_size, classifier.crop_margin
    made: dict[str, Callable[[np.ndarray], np.ndarray]] = {"clean": lambda crop: resize_to(crop, size)}
    for px in EVAL_FACE_SIZES:
        made[str(px)] = functools.partial(_small_view, px=px, size=size, margin=margin)
    return made


def _test_scores(data: RunData) -> tuple[dict, dict[str, np.ndarray]]:
    """Figures on the clean view and on each face-size view; returns them and the probabilities by view."""
    labels = data.classifier.labels
    y = data.y(data.test)
    probs = {name: data.score(data.test, view) for name, view in views(data.classifier).items()}
    clean, mask = probs["clean"], labels.index(WITH_MASK)
    fpr, tpr, _ = roc_curve(y == mask, clean[:, mask])
    result = {
        "run_dir": str(data.run), "model": str(data.run / MODEL_FILE_NAME), "data_dir": str(data.data_root),
        "labels": labels, "ece_definition": ECE_DEFINITION,
        "counts": {"test": len(data.test), "val": len(data.val), "unreadable_val_or_test": data.unreadable,
                   "test_whole_image": sum(data.records[s.sha256].whole_image for s in data.test)},
        "test": _scores(clean, y, labels),
        # The paper's protocol: two classes (a mask below the nose counts as none) at the model's operating point.
        "test_two_class_accuracy": two_class_accuracy(clean, y, labels, data.classifier.operating_point),
        "test_two_class_by_mask_threshold": two_class_by_mask_threshold(clean, y, labels,
                                                                        data.classifier.operating_point),
        "operating_point": data.classifier.operating_point.to_dict(),
        "training_report_test_accuracy": data.report["test"]["accuracy"],
        "test_by_face_px": {name: _scores(p, y, labels) for name, p in probs.items() if name != "clean"},
        "test_masked_recall_by_appearance": _recall_by_appearance(data, probs),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "reliability_bins": calibration_bins(clean, y),
    }
    return result, probs


def _recall_by_appearance(data: RunData, probs: dict[str, np.ndarray]) -> dict[str, dict]:
    """Masked test faces grouped by how their mask looks (dark / patterned / plain): the share called masked,
    on every view."""
    mask = data.classifier.labels.index(WITH_MASK)
    masked = np.flatnonzero(data.y(data.test) == mask)
    kinds = np.array([mask_appearance(data.crop(data.test[i]), data.classifier.crop_margin) for i in masked])
    result = {}
    for kind in APPEARANCES:
        chosen = masked[kinds == kind]
        result[kind] = {"n": int(len(chosen)),
                        **{view: float((p[chosen].argmax(axis=1) == mask).mean()) if len(chosen) else None
                           for view, p in probs.items()}}
    return result


def _build_crops(cache: FaceCropCache, samples: list[Sample], data_root: Path) -> dict:
    # The cache stores read errors for good: refuse a wrong data folder instead of caching "missing" for every image.
    missing = [s for s in samples if s.sha256 not in cache.records and not s.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images of the split are neither cached nor in {data_root} "
                                f"(e.g. {missing[0].path}); pass the data folder the run was trained on")
    return cache.build(samples)


def _probabilities(classifier: MaskClassifier, views: list[np.ndarray]) -> np.ndarray:
    batches = [classifier.probabilities(views[i:i + BATCH]) for i in range(0, len(views), BATCH)]
    return np.concatenate(batches) if batches else np.zeros((0, len(classifier.labels)), np.float32)


def _scores(probabilities: np.ndarray, y_true: np.ndarray, labels: list[str]) -> dict:
    """The classification report (argmax, as in training) plus ranking and calibration figures."""
    mask = labels.index(WITH_MASK)
    scores = classification_report(y_true, probabilities.argmax(axis=1), labels)
    scores["roc_auc"] = roc_auc(y_true == mask, probabilities[:, mask])
    scores["ece"] = expected_calibration_error(probabilities, y_true)
    scores["nll"] = negative_log_likelihood(probabilities, y_true)
    return scores


def _calibration(data: RunData, test_probs: dict[str, np.ndarray]) -> dict:
    """Temperature fitted on the validation split, all views; its effect measured on the test split.

    All views, not only the clean crop: the model meets small faces in use, and on clean crops alone
    a good model is nearly always right, which leaves the likelihood no minimum (T would run to 0).
    """
    val_views = [data.score(data.val, view) for view in views(data.classifier).values()]
    val_probs, y_val = np.concatenate(val_views), np.tile(data.y(data.val), len(val_views))
    temperature = fit_temperature(val_probs, y_val)
    at_bound = not TEMPERATURE_RANGE[0] * 1.01 < temperature < TEMPERATURE_RANGE[1] / 1.01
    y_test = data.y(data.test)
    all_test, y_all = np.concatenate(list(test_probs.values())), np.tile(y_test, len(test_probs))
    clean = test_probs["clean"]
    return {
        "temperature": temperature,
        # At a bound there was no minimum (e.g. a tiny, perfectly separated validation set): not a usable fit.
        "usable": not at_bound,
        "fitted_on": f"validation split, {len(data.val)} images x {len(val_views)} views (clean and "
                     f"{'/'.join(map(str, EVAL_FACE_SIZES))} px faces), minimum NLL of softmax(log p / T)",
        "val_nll_before": negative_log_likelihood(val_probs, y_val),
        "val_nll_after": negative_log_likelihood(apply_temperature(val_probs, temperature), y_val),
        "test_ece_before": expected_calibration_error(clean, y_test),
        "test_ece_after": expected_calibration_error(apply_temperature(clean, temperature), y_test),
        "test_nll_before": negative_log_likelihood(clean, y_test),
        "test_nll_after": negative_log_likelihood(apply_temperature(clean, temperature), y_test),
        "test_all_views_ece_before": expected_calibration_error(all_test, y_all),
        "test_all_views_ece_after": expected_calibration_error(apply_temperature(all_test, temperature), y_all),
        "bins_after": calibration_bins(apply_temperature(clean, temperature), y_test),
    }


def _write_calibrated(data: RunData, calibration: dict) -> dict:
    """Write the calibrated copy, then check that onnxruntime gives softmax(log p / T) with it."""
    temperature = calibration["temperature"]
    details = {k: calibration[k] for k in ("fitted_on", "test_ece_before", "test_ece_after")}
    path = write_calibrated_model(data.run / MODEL_FILE_NAME, data.run / CALIBRATED_NAME, temperature, details)
    views = [resize_to(data.crops[s.sha256], data.classifier.input_size) for s in data.test[:BATCH]]
    expected = apply_temperature(data.classifier.probabilities(views), temperature)
    got = MaskClassifier(path).probabilities(views)
    difference = float(np.abs(expected - got).max())
    if difference > 1e-3:
        raise RuntimeError(f"calibrated model disagrees with the temperature it was given (max diff {difference})")
    return {"path": str(path), "temperature": temperature, "max_abs_difference_to_expected": difference}


def _misclassified(data: RunData, probs: np.ndarray) -> list[dict]:
    """Wrong test images, the most confident mistakes first."""
    labels, test = data.classifier.labels, data.test
    mask = labels.index(WITH_MASK)
    wrong = np.flatnonzero(probs.argmax(axis=1) != data.y(test))
    wrong = wrong[np.argsort(-probs[wrong].max(axis=1), kind="stable")]
    return [{"index": int(i), "file": test[i].relative(data.data_root), "label": test[i].label,
             "predicted": labels[int(probs[i].argmax())], "p_with_mask": float(probs[i, mask]),
             "whole_image": bool(data.records[test[i].sha256].whole_image)} for i in wrong]


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _plots(run: Path, result: dict, crops: list[np.ndarray], labels: list[str]) -> dict[str, str]:
    test = result["test"]
    made = {
        "confusion": plots.confusion_matrix(test["confusion"], labels, run / "confusion_matrix.png"),
        "roc": plots.roc(np.array(result["roc"]["fpr"]), np.array(result["roc"]["tpr"]), test["roc_auc"],
                         WITH_MASK, run / "roc.png"),
    }
    series = [(f"model, ECE {test['ece']:.3f}", result["reliability_bins"])]
    calibration = result.get("calibration")
    if calibration:
        unusable = "" if calibration["usable"] else " (not usable)"
        series.append((f"T = {calibration['temperature']:.2f}{unusable}, ECE {calibration['test_ece_after']:.3f}",
                       calibration["bins_after"]))
    made["reliability"] = plots.reliability(series, run / "reliability.png")
    sizes = list(result["test_by_face_px"])
    made["face_size"] = plots.accuracy_by_face_size(
        sizes, [result["test_by_face_px"][s]["accuracy"] for s in sizes], test["accuracy"],
        run / "accuracy_by_face_size.png")
    if result["history"]:
        made["training"] = plots.training_curves(result["history"], run / "training_curves.png")
    if result["misclassified"]:
        # Made from data-set images: it stays in the run folder and is never committed.
        tiles = [(crops[m["index"]], [f"true {m['label']}", f"P(with_mask) {m['p_with_mask']:.3f}",
                                      Path(m["file"]).name[:22]]) for m in result["misclassified"][:SHEET_LIMIT]]
        made["misclassified"] = plots.contact_sheet(tiles, run / SHEET_NAME)
    else:
        (run / SHEET_NAME).unlink(missing_ok=True)  # a sheet from an earlier evaluation would be stale
    return {name: path.name for name, path in made.items()}



def render_markdown(result: dict) -> str:
    """evaluation.md: the figures a reviewer needs, with the plots beside it."""
    sections = [_md_summary(result), _md_calibration(result), _md_face_sizes(result),
                _md_appearance(result), _md_training(result), _md_misclassified(result)]
    return "\n\n".join(s for s in sections if s) + "\n"


def _md_summary(result: dict) -> str:
    test, counts, labels = result["test"], result["counts"], result["labels"]
    agrees = abs(test["accuracy"] - result["training_report_test_accuracy"]) < 1e-9
    rows = [
        ["accuracy", f"{test['accuracy']:.4f} ({test['n']} images; training report "
                     f"{result['training_report_test_accuracy']:.4f}{'' if agrees else ', DIFFERS'})"],
        ["two classes at the operating point (the paper's protocol)",
         f"{fmt(result.get('test_two_class_accuracy'), 4)} (with_mask at P >= "
         f"{result.get('operating_point', {}).get('mask_threshold', 0.5):g})"],
        [f"ROC AUC (score P({WITH_MASK}))", fmt(test["roc_auc"], 4)],
        [f"ECE ({ECE_BINS} bins)", fmt(test["ece"], 4)],
        ["NLL", fmt(test["nll"], 4)],
    ]
    per_class = [[label, *(fmt(test["per_class"][label][k]) for k in ("precision", "recall", "f1")),
                  test["per_class"][label]["support"]] for label in labels]
    return "\n\n".join([
        f"# Evaluation of `{Path(result['run_dir']).name}`",
        f"The test split of `split.csv` ({counts['test']} images; {counts['test_whole_image']} had no face above the "
        "threshold, so their whole image was used) re-scored by onnxruntime with the exported "
        f"`{Path(result['model']).name}`, on the cached face crops with training's preprocessing "
        "(the clean crop resized to the model input). Predictions are the argmax, as in training.",
        markdown_table(["metric", "value"], rows),
        markdown_table(["class", "precision", "recall", "F1", "support"], per_class),
        "![confusion matrix](confusion_matrix.png) ![ROC curve](roc.png)",
        _md_two_class_sweep(result),
    ])


def _md_two_class_sweep(result: dict) -> str:
    """The paper's protocol at other mask cuts: the cut is chosen on crowd faces, portraits may want another."""
    sweep = result.get("test_two_class_by_mask_threshold") or {}
    if not sweep:
        return ""
    return "\n\n".join([
        "The paper's two-class protocol with the mask cut moved (`with_mask` at P >= the cut; the model's own "
        f"cut is {result.get('operating_point', {}).get('mask_threshold', 0.5):g}, chosen on the scene faces "
        "when it was trained on scene sets):",
        markdown_table(["P(with_mask) cut", *sweep], [["two-class accuracy", *(fmt(v, 4) for v in sweep.values())]]),
    ])


def _md_calibration(result: dict) -> str:
    calibration = result.get("calibration")
    lines = ["## Calibration", f"ECE here is the {ECE_DEFINITION}."]
    if not calibration:
        return "\n\n".join([*lines, "No validation images: no temperature was fitted.",
                             "![reliability diagram](reliability.png)"])
    rows = [["ECE, clean crops", fmt(calibration["test_ece_before"], 4), fmt(calibration["test_ece_after"], 4)],
            ["ECE, all views", fmt(calibration["test_all_views_ece_before"], 4),
             fmt(calibration["test_all_views_ece_after"], 4)],
            ["NLL, clean crops", fmt(calibration["test_nll_before"], 4), fmt(calibration["test_nll_after"], 4)]]
    lines += [
        f"Temperature scaling: T = {calibration['temperature']:.3f}, fitted on the {calibration['fitted_on']} "
        "(T > 1 softens over-confident probabilities). Accuracy is unchanged by construction.",
        markdown_table(["test", "model", f"T = {calibration['temperature']:.3f}"], rows),
    ]
    if not calibration["usable"]:
        lines.append(f"**This T is at the end of the search range {TEMPERATURE_RANGE}: the validation split has no "
                     "likelihood minimum (too few images, or all of them right), so the fit is not usable and "
                     "`--calibrate` writes no model.**")
    written = result.get("calibrated_model")
    if written:
        lines.append(f"Written: `{Path(written['path']).name}`, the same graph with `Softmax(logits / T)` inside it "
                     "(so every runtime gets the calibrated probabilities); checked against softmax(log p / T), "
                     f"max difference {written['max_abs_difference_to_expected']:.1e}.")
    elif calibration["usable"]:
        lines.append(f"`maskwatch evaluate RUN_DIR --calibrate` writes `{CALIBRATED_NAME}` with T applied in "
                     "the graph.")
    lines.append("![reliability diagram](reliability.png)")
    return "\n\n".join(lines)


def _md_face_sizes(result: dict) -> str:
    labels = result["labels"]
    rows = [["full crop", *_size_cells(result["test"], labels)]]
    rows += [[px, *_size_cells(scores, labels)] for px, scores in result["test_by_face_px"].items()]
    return "\n\n".join([
        "## Accuracy by face size",
        "Each test crop shrunk to the size it has around a face this many pixels high, then enlarged to the model "
        "input (training's evaluation views).",
        markdown_table(["face px", "accuracy", "ROC AUC", "ECE", *(f"{label} recall" for label in labels)], rows),
        "![accuracy by face size](accuracy_by_face_size.png)",
    ])


def _md_appearance(result: dict) -> str:
    by_kind = result.get("test_masked_recall_by_appearance")
    if not by_kind:
        return ""
    view_names = [name for name in next(iter(by_kind.values())) if name != "n"]
    rows = [[kind, scores["n"], *(scores[name] for name in view_names)] for kind, scores in by_kind.items()]
    return "\n\n".join([
        "## Masked faces by mask appearance",
        "Share of masked test faces called masked, by how the mask looks in the mouth-and-chin region of the crop "
        "(`maskwatch.evaluation.appearance`: dark = median luminance below 60, patterned = Laplacian deviation of "
        "30 or more, plain = the rest).",
        markdown_table(["mask", "images", *(n if n == "clean" else f"{n} px" for n in view_names)], rows),
    ])


def _size_cells(scores: dict, labels: list[str]) -> list[object]:
    return [scores["accuracy"], scores["roc_auc"], scores["ece"], *(scores["per_class"][la]["recall"] for la in labels)]


def _md_training(result: dict) -> str:
    history = result["history"]
    if not history:
        return ""
    best = min(history, key=lambda row: row["val_loss"])
    return "\n\n".join([
        "## Training curves",
        f"{len(history)} epochs; best validation loss {best['val_loss']:.4f} at epoch {int(best['epoch'])} "
        f"(validation accuracy {best['val_accuracy']:.4f}), whose weights were kept.",
        "![training curves](training_curves.png)",
    ])


def _md_misclassified(result: dict) -> str:
    wrong = result["misclassified"]
    if not wrong:
        return "## Misclassified test images\n\nNone."
    rows = [[m["file"], m["label"], m["predicted"], m["p_with_mask"], "yes" if m["whole_image"] else ""]
            for m in wrong]
    return "\n\n".join([
        "## Misclassified test images",
        f"{len(wrong)} of {result['test']['n']}, the most confident mistakes first.",
        markdown_table(["file", "true", "predicted", f"P({WITH_MASK})", "no face found"], rows),
        f"Contact sheet: [{SHEET_NAME}]({SHEET_NAME}) (each crop with its true label and P({WITH_MASK}))"
        + (f"; it shows only the {SHEET_LIMIT} most confident of the {len(wrong)} mistakes."
           if len(wrong) > SHEET_LIMIT else "."),
        f"> **`{SHEET_NAME}` is made from data-set images. It stays in this run folder and must never be committed "
        "or published.**",
    ])
