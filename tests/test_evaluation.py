"""``maskwatch evaluate``: the metrics on arrays with known answers, then scenes, face folders and a tiny run.

Scenes and copies of photos are written under pytest's tmp dirs only: never commit pictures made from the data set.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from conftest import DATASET, TEST_SPLIT_FACES

from maskwatch.classifier import DEFAULT_CLASSIFIER_PATH, MaskClassifier
from maskwatch.cli.evaluate import add_command
from maskwatch.evaluation.plots import contact_sheet
from maskwatch.evaluation.scenes import GroundTruth, match
from maskwatch.faces import YuNetDetector
from maskwatch.images import load_image
from maskwatch.synthetic import face_patch, free_spot, paste
from maskwatch.training.metrics import (
    apply_temperature,
    average_precision,
    expected_calibration_error,
    fit_temperature,
    roc_auc,
    roc_curve,
)
from maskwatch.training.operating_point import TWO_CLASS_SWEEP, two_class_by_mask_threshold

# ---------------------------------------------------------------- metrics on hand-made arrays


def test_roc_auc_known_rankings() -> None:
    positive = np.array([1, 1, 1, 0, 0, 0], bool)
    assert roc_auc(positive, np.array([6, 5, 4, 3, 2, 1])) == 1.0
    assert roc_auc(positive, np.array([1, 2, 3, 4, 5, 6])) == 0.0
    assert roc_auc(positive, np.zeros(6)) == 0.5  # all tied: a coin toss
    # Positives 0.8, 0.4; negatives 0.4, 0.1: pairs won 1 + 1 + 1/2 (tie) + 1 of 4.
    assert roc_auc(np.array([1, 1, 0, 0], bool), np.array([0.8, 0.4, 0.4, 0.1])) == pytest.approx(0.875)
    assert roc_auc(np.ones(3, bool), np.arange(3)) is None


def test_roc_auc_of_random_scores_is_one_half_and_matches_the_curve() -> None:
    rng = np.random.default_rng(0)
    positive, scores = rng.random(20000) < 0.3, rng.random(20000)
    assert roc_auc(positive, scores) == pytest.approx(0.5, abs=0.02)
    scores = np.round(scores + positive * 0.3, 1)  # informative, with many ties
    fpr, tpr, _ = roc_curve(positive, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(positive, scores), abs=1e-9)


def test_ece_of_calibrated_and_overconfident_predictions() -> None:
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    right = rng.random(confidence.size) < confidence  # right exactly as often as claimed
    probs = np.stack([confidence, 1 - confidence], axis=1)
    assert expected_calibration_error(probs, np.where(right, 0, 1)) < 0.01
    # Always 90% sure, right 60% of the time: ECE = |0.6 - 0.9|.
    overconfident = np.tile([0.9, 0.1], (10, 1))
    assert expected_calibration_error(overconfident, np.array([0] * 6 + [1] * 4)) == pytest.approx(0.3)


def test_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (5000, 2))
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.random(len(truth)) > truth[:, 0]).astype(int)  # labels drawn from the true probabilities
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)  # a model 3x too sure
    temperature = fit_temperature(sharp, y)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert expected_calibration_error(apply_temperature(sharp, temperature), y) < \
        expected_calibration_error(sharp, y) / 3
    assert np.allclose(apply_temperature(sharp, 1.0), sharp)


def test_average_precision_of_known_pr_curves() -> None:
    # Ranked TP, FP, TP: precision 1 at recall 1/2, 2/3 at recall 1 -> AP = 1/2 + 1/3.
    assert average_precision([0.9, 0.8, 0.7], [True, False, True], 2) == pytest.approx(5 / 6)
    # A third face never detected caps recall at 2/3.
    assert average_precision([0.9, 0.8, 0.7], [True, False, True], 3) == pytest.approx(5 / 9)
    # The envelope: precision 2/3 at recall 1 also counts for the recall reached at precision 1/2.
    assert average_precision([0.9, 0.8, 0.7], [False, True, True], 2) == pytest.approx(2 / 3)
    assert average_precision([0.5, 0.4], [True, True], 2) == 1.0
    assert average_precision([0.5], [False], 1) == 0.0
    assert average_precision([], [], 0) is None


def test_matching_ignores_small_and_unknown_faces() -> None:
    objects = [GroundTruth((0, 0, 100, 100), "with_mask", "with_mask"),
               GroundTruth((200, 0, 210, 10), "with_mask", "with_mask", "small"),
               GroundTruth((300, 0, 400, 100), "person", None, "class person")]
    boxes = [(2, 2, 100, 100), (200, 0, 210, 10), (300, 0, 400, 100), (500, 0, 508, 8), (600, 0, 700, 100),
             (1, 1, 99, 99)]
    matches, ignored = match(objects, boxes, [0.9, 0.9, 0.9, 0.9, 0.9, 0.5], min_face=20)
    assert matches == [0, None, None, None, None, None]
    # On a small face, on an unknown class, itself too small: ignored; elsewhere, or a duplicate: false.
    assert ignored == [False, True, True, True, False, False]


def test_calibrated_model_applies_the_temperature(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="--calibrate needs the train extra")
    from maskwatch.evaluation.calibration import write_calibrated_model

    classifier = MaskClassifier(DEFAULT_CLASSIFIER_PATH)
    calibrated = MaskClassifier(write_calibrated_model(DEFAULT_CLASSIFIER_PATH, tmp_path / "c.onnx", 2.0, {}))
    crops = [load_image(p)[:classifier.input_size, :classifier.input_size] for p in TEST_SPLIT_FACES["with_mask"]]
    crops = [cv2.resize(c, (classifier.input_size,) * 2) for c in crops]
    expected = apply_temperature(classifier.probabilities(crops), 2.0)
    assert np.abs(calibrated.probabilities(crops) - expected).max() < 1e-4
    assert calibrated.metadata["calibration"]["temperature"] == 2.0
    assert calibrated.labels == classifier.labels


def test_calibrating_a_graph_without_a_final_softmax(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="--calibrate needs the train extra")
    from onnx import TensorProto, helper

    from maskwatch.evaluation.calibration import write_calibrated_model

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["probabilities"])], "probs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="maskwatch", value="{}")
    onnx.save(model, tmp_path / "identity.onnx")
    path = write_calibrated_model(tmp_path / "identity.onnx", tmp_path / "c.onnx", 0.5, {})
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [1.0, 0.0]], np.float32)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": probs})
    assert np.abs(got - apply_temperature(probs, 0.5)).max() < 1e-5


def test_contact_sheet_grid(tmp_path: Path) -> None:
    tiles = [(np.full((160, 160, 3), 25 * i, np.uint8), ["true with_mask", f"P {i / 10:.2f}"]) for i in range(10)]
    image = cv2.imread(str(contact_sheet(tiles, tmp_path / "sheet.png", tile=64, columns=4)))
    assert image.shape[0] == 3 * (64 + 8 + 2 * 14) and image.shape[1] == 4 * (64 + 8)


# ---------------------------------------------------------------- the command


def evaluate(*args: str) -> int:
    """Run ``maskwatch evaluate`` in this process, through the module's own parser hook."""
    parser = argparse.ArgumentParser(prog="maskwatch")
    add_command(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args(["evaluate", "--quiet", *args])
    return parsed.func(parsed)


def write_voc(path: Path, filename: str, size: tuple[int, int], objects: list[tuple[str, np.ndarray]]) -> None:
    parts = [f"<annotation><filename>{filename}</filename>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for name, box in objects:
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        parts.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
                     f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts) + "</annotation>")


def make_scene(faces: list[tuple[Path, int, str]], yunet: YuNetDetector, rng: np.random.Generator,
               ) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Real test-split faces pasted at the given heights on a blurred noise background, with their boxes."""
    noise = rng.integers(60, 200, size=(30, 40, 3), dtype=np.uint8)
    scene = cv2.GaussianBlur(cv2.resize(noise, (640, 480), interpolation=cv2.INTER_CUBIC), (0, 0), 6)
    objects, taken = [], []
    for photo, height, name in faces:
        image = load_image(photo)
        face = max(yunet.detect(image), key=lambda f: f.width * f.height)
        patch, alpha, box = face_patch(image, face.box, height)
        spot = free_spot(taken, patch.shape[1], patch.shape[0], 640, 480, rng)
        assert spot is not None
        paste(scene, patch, alpha, *spot)
        taken.append(np.array([spot[0], spot[1], spot[0] + patch.shape[1], spot[1] + patch.shape[0]]))
        objects.append((name, box + np.array([spot[0], spot[1], spot[0], spot[1]])))
    return scene, objects


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory, yunet_path: Path) -> Path:
    """Two scenes, one per VOC layout: four big faces, one 12 px face, one face of a class the model lacks."""
    root = tmp_path_factory.mktemp("scenes")
    yunet, rng = YuNetDetector(yunet_path), np.random.default_rng(0)
    masked, bare = TEST_SPLIT_FACES["with_mask"], TEST_SPLIT_FACES["without_mask"]
    scene, objects = make_scene([(masked[0], 96, "with_mask"), (bare[0], 96, "without_mask"),
                                 (bare[1], 12, "without_mask")], yunet, rng)
    (root / "beside").mkdir()
    cv2.imwrite(str(root / "beside" / "a.jpg"), scene)
    write_voc(root / "beside" / "a.xml", "", (640, 480), objects)  # no <filename>: found by its stem
    scene, objects = make_scene([(masked[1], 88, "with_mask"), (bare[1], 88, "mask_weared_incorrect"),
                                 (masked[2], 88, "person")], yunet, rng)
    (root / "voc" / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "voc" / "images" / "b.png"), scene)
    write_voc(root / "voc" / "annotations" / "b.xml", "b.png", (640, 480), objects)
    return root


def test_scenes_recall_labels_and_ap(scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The photo default (extra passes at 2x and 3x) finds the 12 px face too: it must not count as false.
    assert evaluate("--scenes", str(scenes), "--min-face", "24", "--two-class", "--json", str(tmp_path / "r.json")) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert "| with_mask |" in capsys.readouterr().out
    assert result["images"] == 2
    # In two-class mode mask_weared_incorrect counts as without_mask; "person" and the 12 px face are ignored.
    assert {k: v["faces"] for k, v in result["per_class"].items()} == {"with_mask": 2, "without_mask": 2}
    assert result["ignored_objects"] == {"small": 1, "class person": 1}
    assert result["all"]["recall"] == 1.0
    assert result["all"]["label_accuracy"] >= 0.75
    # Detections on the "person" face and (when YuNet finds it at all) the 12 px face are ignored, not false.
    # The photo default's mirrored enlarged passes may find one face-like blob in the noise background.
    assert result["false_faces"] <= 1 and result["ignored_detections"] in (1, 2)
    assert result["detections"] - result["ignored_detections"] - result["false_faces"] == 4
    for label in ("with_mask", "without_mask"):
        assert result["per_class"][label]["ap50"] >= 0.75, result["per_class"]


def test_scenes_min_face_rule(scenes: Path, tmp_path: Path) -> None:
    assert evaluate("--scenes", str(scenes), "--extra-scales", "", "--two-class",
                    "--json", str(tmp_path / "all.json")) == 0
    counted = json.loads((tmp_path / "all.json").read_text())
    # Without --min-face the 12 px face counts, and one YuNet pass cannot find a face that small.
    assert counted["per_class"]["without_mask"]["faces"] == 3
    assert "small" not in counted["ignored_objects"]
    assert counted["all"]["found"] == 4 and counted["all"]["recall"] == pytest.approx(0.8)
    assert counted["per_class"]["without_mask"]["ap50"] <= 2 / 3 + 1e-9  # recall for that class is capped


def test_scenes_label_map_option(scenes: Path, tmp_path: Path) -> None:
    assert evaluate("--scenes", str(scenes), "--min-face", "24", "--extra-scales", "",
                    "--map-label", "person=with_mask", "--map-label", "mask_weared_incorrect=ignore",
                    "--json", str(tmp_path / "m.json")) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["per_class"]["with_mask"]["faces"] == 3 and result["per_class"]["without_mask"]["faces"] == 1
    assert result["ignored_objects"] == {"small": 1, "class mask_weared_incorrect": 1}
    assert evaluate("--scenes", str(scenes), "--map-label", "person=hat") == 2  # not a model label


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    for label, names in {"with_mask": ["with_mask_0003.jpg", "with_mask_0010.jpg"],
                         "without_mask": ["without_mask_0003.jpg", "without_mask_0009.jpg"]}.items():
        (root / label).mkdir()
        for name in names:
            shutil.copy(DATASET / label / name, root / label / name)
    cv2.imwrite(str(root / "with_mask" / "blank.png"), np.full((200, 200, 3), 128, np.uint8))  # no face in it
    return root


def test_faces_folder(face_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert evaluate("--faces", str(face_folder), "--json", str(tmp_path / "f.json")) == 0
    result = json.loads((tmp_path / "f.json").read_text())
    assert "accuracy (images with a face)" in capsys.readouterr().out
    assert (result["images"], result["classified"], result["no_face"]) == (5, 4, 1)
    assert result["counts"]["with_mask"] == {"images": 3, "no_face": 1, "unreadable": 0}
    assert result["scores"]["accuracy"] == 1.0 and result["scores"]["roc_auc"] == 1.0
    assert result["accuracy_all_images"] == pytest.approx(0.8)  # the blank image counts as wrong
    assert {p["predicted"] for p in result["per_image"] if "predicted" in p} == {"with_mask", "without_mask"}


def test_faces_folder_names_must_be_labels(face_folder: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(face_folder, tmp_path / "set")
    (tmp_path / "set" / "masked").mkdir()
    assert evaluate("--faces", str(tmp_path / "set")) == 2
    assert "masked" in capsys.readouterr().err
    assert evaluate("--faces", str(tmp_path / "set"), "--map-label", "masked=ignore") == 0


# ---------------------------------------------------------------- a training run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, yunet_path: Path) -> Path:
    pytest.importorskip("torch", reason="training needs the train extra")
    pytest.importorskip("matplotlib", reason="evaluation plots need the train extra")
    from maskwatch.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(data_dir=str(DATASET), out_dir=str(out), limit=15, views=2, max_epochs=10, patience=3,
                      cache_dir=str(tmp_path_factory.mktemp("cache")), face_model=str(yunet_path)))
    return out


def test_a_folder_that_is_not_a_run_is_said_plainly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "report.json").write_text('{"labels": ["with_mask", "without_mask"]}')
    for run, says in ((tmp_path / "absent", "no such run folder"), (empty, "not a `maskwatch train` run folder"),
                      (odd, "not a `maskwatch train` report (no config)")):
        assert evaluate(str(run), "--json", str(tmp_path / "e.json")) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
        assert not (tmp_path / "e.json").exists()  # a --json file is not left behind empty
    kept = tmp_path / "kept.json"  # the user's file: kept as it was when there is nothing to write
    kept.write_text('{"earlier": 1}')
    assert evaluate(str(empty), "--json", str(kept)) == 2
    assert kept.read_text() == '{"earlier": 1}'
    assert evaluate(str(empty), "--json", str(tmp_path / ("x" * 300 + ".json"))) == 2  # a name too long
    assert "cannot write --json" in capsys.readouterr().err


def test_run_dir_evaluation(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert evaluate(str(tiny_run), "--calibrate") == 0
    assert "test accuracy" in capsys.readouterr().out
    for name in ("evaluation.md", "evaluation.json", "confusion_matrix.png", "reliability.png", "roc.png",
                 "training_curves.png", "accuracy_by_face_size.png"):
        assert (tiny_run / name).is_file(), name
        if name.endswith(".png"):
            assert cv2.imread(str(tiny_run / name)) is not None, name
    result = json.loads((tiny_run / "evaluation.json").read_text())
    report = json.loads((tiny_run / "report.json").read_text())
    test = result["test"]
    # onnxruntime on the exported file reproduces the PyTorch head's test accuracy.
    assert test["accuracy"] == report["test"]["accuracy"] and test["n"] == report["counts"]["test_images"]
    assert {"roc_auc", "ece", "nll", "per_class", "confusion"} <= set(test)
    assert set(result["test_by_face_px"]) == {"16", "24", "32", "48"}
    sweep = result["test_two_class_by_mask_threshold"]  # the paper's protocol with the mask cut moved
    assert list(sweep) == [f"{t:g}" for t in TWO_CLASS_SWEEP] and all(0 <= v <= 1 for v in sweep.values())
    cut = f"{result['operating_point']['mask_threshold']:g}"  # 0.5: a run without scene sets keeps the default
    assert sweep[cut] == result["test_two_class_accuracy"]
    assert len(result["misclassified"]) == test["n"] - int(np.trace(test["confusion"]))
    assert (tiny_run / "misclassified.png").is_file() == bool(result["misclassified"])
    calibration = result["calibration"]
    assert calibration["temperature"] > 0 and 0 <= calibration["test_ece_after"] <= 1
    # A tiny, perfectly separated validation split has no likelihood minimum: then no model may be written.
    written = (tiny_run / "mask_classifier.calibrated.onnx").is_file()
    assert written == calibration["usable"] == ("calibrated_model" in result)
    text = (tiny_run / "evaluation.md").read_text()
    assert "15 equal-width bins" in text and "ROC AUC" in text and "Accuracy by face size" in text
    assert "mask cut moved" in text


def test_run_dir_lists_and_draws_mistakes(tiny_run: Path, tmp_path: Path) -> None:
    """Relabel the test split's with_mask images as without_mask: the model's right answers become mistakes."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*.png", "evaluation.*"))
    with open(run / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:  # every test image becomes "without_mask": the masked ones are now mistakes
        if row["split"] == "test":
            row["label"] = "without_mask"
    with open(run / "split.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert evaluate(str(run), "--json", str(tmp_path / "copy.json")) == 0

    def no_nan(name: str) -> None:
        raise AssertionError(f"{name} in strict JSON")

    # One class left in the test split: ROC AUC is undefined, and is written as null, never NaN.
    result = json.loads((run / "evaluation.json").read_text(), parse_constant=no_nan)
    assert json.loads((tmp_path / "copy.json").read_text(), parse_constant=no_nan) == result
    wrong = result["misclassified"]
    assert wrong and all(m["label"] == "without_mask" and m["predicted"] == "with_mask" for m in wrong)
    assert len(wrong) == result["test"]["per_class"]["without_mask"]["support"] - \
        result["test"]["confusion"][1][1]
    sheet = cv2.imread(str(run / "misclassified.png"))
    assert sheet is not None and sheet.shape[0] >= 128
    text = (run / "evaluation.md").read_text()
    assert "must never be committed" in text and wrong[0]["file"] in text


def test_json_output_path_is_checked_before_evaluating(face_folder: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert evaluate("--faces", str(face_folder), "--json", str(tmp_path / "missing" / "r.json")) == 2
    captured = capsys.readouterr()
    assert "cannot write --json" in captured.err and captured.out == ""  # nothing was evaluated


def test_json_safe_and_contact_sheet_cap() -> None:
    from maskwatch.evaluation.run_report import SHEET_LIMIT, _md_misclassified, dumps_json

    assert json.loads(dumps_json({"a": float("nan"), "b": [np.float32("inf"), 1.5]})) == {"a": None, "b": [None, 1.5]}
    wrong = [{"file": f"f{i}.jpg", "label": "with_mask", "predicted": "without_mask", "p_with_mask": 0.1,
              "whole_image": False} for i in range(SHEET_LIMIT + 6)]
    text = _md_misclassified({"misclassified": wrong, "test": {"n": 100}})
    assert f"only the {SHEET_LIMIT} most confident of the {SHEET_LIMIT + 6}" in text
    assert "only the" not in _md_misclassified({"misclassified": wrong[:3], "test": {"n": 100}})


def test_real_scenes_val_split_reports_both_views_and_writes_the_run_folder(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    from conftest import scene_subset

    scenes = scene_subset(tmp_path / "scenes", per_split=3)
    out = tmp_path / "report"
    assert evaluate("--scenes", str(scenes), "--split", "val", "--min-face", "16", "--out", str(out),
                    "--json", str(tmp_path / "s.json")) == 0
    text = capsys.readouterr().out
    assert "classifier alone" in text and "Slices" in text
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["images"] == 3 and result["split"] == "val"
    labels = result["labels"]
    assert "incorrect_mask" in labels and result["per_class"]["incorrect_mask"]["faces"] >= 3
    alone = result["classifier_alone"]
    assert np.sum(alone["matrix"]) == result["all"]["faces"]  # every counted face, found or not
    assert np.sum(result["found_confusion"]["matrix"]) == result["all"]["found"]
    assert 0.0 <= alone["balanced_accuracy"] <= 1.0 and alone["roc_auc_masked_vs_bare"] is not None
    assert set(result["slices"]) >= {"face size (px)", "head turn (yaw)", "blur", "darkness"}
    assert result["by_size"]["24+"]["without_mask"]["faces"] >= 1
    for name in ("scenes.md", "scenes.json"):
        assert (out / name).is_file()
    # Two-class mode folds the third class into without_mask, in the labels and in the ground truth.
    assert evaluate("--scenes", str(scenes), "--split", "val", "--two-class", "--json", str(tmp_path / "t.json")) == 0
    folded = json.loads((tmp_path / "t.json").read_text())
    assert "incorrect_mask" not in folded["labels"] and folded["two_class"] is True
    assert evaluate("--scenes", str(scenes), "--split", "test") == 2  # not in the manifest


def test_two_class_protocol_by_mask_cut() -> None:
    """Only the mask cut moves the two-class answer; the incorrect/bare split inside "not masked" does not."""
    from maskwatch.classifier.decision import OperatingPoint

    labels = ["incorrect_mask", "with_mask", "without_mask"]
    probabilities = np.array([[0.05, 0.45, 0.50],   # masked, unsure
                              [0.10, 0.60, 0.30],   # bare, called masked above 0.6
                              [0.70, 0.20, 0.10]])  # mask below the nose: "not masked" in two classes
    y = np.array([1, 2, 0])
    sweep = two_class_by_mask_threshold(probabilities, y, labels, OperatingPoint(0.5, 0.9), (0.4, 0.5, 0.65))
    assert sweep == pytest.approx({"0.4": 2 / 3, "0.5": 1 / 3, "0.65": 2 / 3})
