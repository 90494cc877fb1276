"""`maskwatch average`: the mean of classifiers' weights, its operating point on scene faces, and what it refuses."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import portrait_subset, scene_subset
from fixed_classifier import write_fixed_classifier
from onnx import numpy_helper

from maskwatch.classifier.onnx_classifier import MaskClassifier
from maskwatch.cli import main
from maskwatch.model_files import sha256_of
from maskwatch.training.average import average_models, average_weights
from maskwatch.training.data import fingerprint, scan_dataset, write_split

MASKED = {"incorrect_mask": 0.1, "with_mask": 0.8, "without_mask": 0.1}
BARE = {"incorrect_mask": 0.2, "with_mask": 0.1, "without_mask": 0.7}


def _logits(path: Path) -> np.ndarray:
    named = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    return named["logits"]


def test_the_weights_are_averaged_name_by_name(tmp_path: Path) -> None:
    a = write_fixed_classifier(tmp_path / "a.onnx", MASKED)
    b = write_fixed_classifier(tmp_path / "b.onnx", BARE)
    mean, _ = average_weights([a, b])
    named = {t.name: numpy_helper.to_array(t) for t in mean.graph.initializer}
    np.testing.assert_allclose(named["logits"], (_logits(a) + _logits(b)) / 2, rtol=1e-6)
    weighted, _ = average_weights([a, b], [0.75, 0.25])
    named = {t.name: numpy_helper.to_array(t) for t in weighted.graph.initializer}
    np.testing.assert_allclose(named["logits"], 0.75 * _logits(a) + 0.25 * _logits(b), rtol=1e-6)


def test_models_that_cannot_be_averaged_are_refused(tmp_path: Path) -> None:
    a = write_fixed_classifier(tmp_path / "a.onnx", MASKED)
    two = write_fixed_classifier(tmp_path / "two.onnx", {"with_mask": 0.5, "without_mask": 0.5},
                                 labels=["with_mask", "without_mask"])
    with pytest.raises(ValueError, match="labels"):
        average_weights([a, two])
    with pytest.raises(ValueError, match="at least two"):
        average_weights([a])
    with pytest.raises(ValueError, match="summing to 1"):
        average_weights([a, a], [0.5, 0.6])
    other = onnx.load(str(a))  # same labels and metadata, another network: one more weight
    other.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "extra"))
    onnx.save(other, str(tmp_path / "other.onnx"))
    with pytest.raises(ValueError, match="not the same network"):
        average_weights([a, tmp_path / "other.onnx"])
    copy = tmp_path / "copy.onnx"  # one model under two names: its mean is itself, so a wrong path
    copy.write_bytes(a.read_bytes())
    with pytest.raises(ValueError, match="are the same model"):
        average_weights([a, copy])


def test_average_writes_a_model_with_its_operating_point_and_sources(tmp_path: Path) -> None:
    scenes = scene_subset(tmp_path / "scenes", per_split=3, splits=("val",))
    a = write_fixed_classifier(tmp_path / "a.onnx", MASKED)
    b = write_fixed_classifier(tmp_path / "b.onnx", BARE)
    report = average_models([a, b], tmp_path / "soup", scenes, split="val")
    model = tmp_path / "soup" / "mask_classifier.onnx"
    assert report["sha256"] == sha256_of(model)
    classifier = MaskClassifier(model)
    meta = classifier.metadata
    assert [s["sha256"] for s in meta["averaged_from"]] == [sha256_of(a), sha256_of(b)]
    assert [s["weight"] for s in meta["averaged_from"]] == [0.5, 0.5]
    search = meta["operating_point"]["search"]
    assert search["faces"] > 0 and "split val" in search["chosen_on"]
    assert classifier.operating_point.mask_threshold == meta["operating_point"]["mask_threshold"]
    expected = np.exp((_logits(a) + _logits(b)) / 2)
    got = classifier.probabilities([np.zeros((32, 32, 3), np.uint8)])[0]
    np.testing.assert_allclose(got, expected / expected.sum(), rtol=1e-5)
    assert json.loads((tmp_path / "soup" / "average.json").read_text())["sha256"] == report["sha256"]


def test_a_mean_averaged_again_lists_the_trained_models(tmp_path: Path) -> None:
    """A mean given to `average` is listed by its members, their weights scaled, so each training is kept."""
    scenes = scene_subset(tmp_path / "scenes", per_split=3, splits=("val",))
    a, b, c, d = (_trained(write_fixed_classifier(tmp_path / f"{name}.onnx", probabilities), seed)
                  for name, probabilities, seed in (("a", MASKED, 0), ("b", BARE, 1), ("c", BARE, 2), ("d", MASKED, 3)))
    average_models([a, b], tmp_path / "ab", scenes, split="val")
    ab = tmp_path / "ab" / "mask_classifier.onnx"
    average_models([c, ab], tmp_path / "abc", scenes, split="val", weights=[0.5, 0.5])
    abc = tmp_path / "abc" / "mask_classifier.onnx"
    members = MaskClassifier(abc).metadata["averaged_from"]
    assert [m["sha256"] for m in members] == [sha256_of(c), sha256_of(a), sha256_of(b)]
    assert [m["weight"] for m in members] == [0.5, 0.25, 0.25]
    # What rebuilds a member's split (benchmarks/paper_protocol_by_cut.py) comes through from each training.
    assert [m["maskwatch_train_config"]["seed"] for m in members] == [2, 0, 1]
    assert {m["split_fingerprint"] for m in members} == {"f" * 16}
    assert "via" not in members[0]
    assert [[v["sha256"] for v in m["via"]] for m in members[1:]] == [[sha256_of(ab)]] * 2
    average_models([d, abc], tmp_path / "abcd", scenes, split="val", weights=[0.5, 0.5])  # a mean of a mean of a mean
    deeper = MaskClassifier(tmp_path / "abcd" / "mask_classifier.onnx").metadata["averaged_from"]
    assert [m["weight"] for m in deeper] == [0.5, 0.25, 0.125, 0.125]
    assert [[v["sha256"] for v in m["via"]] for m in deeper[2:]] == [[sha256_of(abc), sha256_of(ab)]] * 2


def _trained(path: Path, seed: int) -> Path:
    """A fixed classifier whose metadata holds a training configuration and a split, as `maskwatch train`'s."""
    model = onnx.load(str(path))
    meta = json.loads(model.metadata_props[0].value)
    meta.update(maskwatch_train_config={"seed": seed}, split_fingerprint="f" * 16)
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(path))
    return path


def test_the_command_reports_what_it_cannot_average(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_fixed_classifier(tmp_path / "a.onnx", MASKED)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    for other, says in ((tmp_path / "missing.onnx", "missing.onnx"), (junk, "not a readable ONNX model")):
        code = main(["average", str(a), str(other), "--scenes", str(tmp_path), "--out", str(tmp_path / "soup")])
        assert code == 2
        assert says in capsys.readouterr().err
        assert not (tmp_path / "soup").exists()  # nothing is written before every check has passed
    run = tmp_path / "run"  # a training run's folder: a mean there would sit beside another model's files
    run.mkdir()
    (run / "history.csv").write_text("epoch\n")
    code = main(["average", str(a), str(a), "--scenes", str(tmp_path), "--out", str(run)])
    assert code == 2 and "holds a training run (history.csv)" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["history.csv"]


TWO_CLASSES = ["with_mask", "without_mask"]


def _run(folder: Path, data: Path, splits: list[str], probabilities: dict[str, float]) -> Path:
    """A run folder as `maskwatch train` leaves it: a model that knows its split, split.csv and report.json."""
    samples, _ = scan_dataset(data)
    for sample, split in zip(sorted(samples, key=lambda s: s.path.name), splits, strict=True):
        sample.split = split
    folder.mkdir(parents=True)
    write_split(samples, [data], folder / "split.csv")
    model = onnx.load(str(write_fixed_classifier(folder / "mask_classifier.onnx", probabilities,
                                                 labels=TWO_CLASSES)))
    meta = json.loads(model.metadata_props[0].value)
    meta["split_fingerprint"] = fingerprint(samples, with_split=True)
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(folder / "mask_classifier.onnx"))
    config = {"data_dir": str(data), "extra_data": [], "cache_dir": str(folder.parent / "cache"), "face_model": None,
              "face_threshold": 0.5, "crop_margin": 0.2}
    (folder / "report.json").write_text(json.dumps({"config": config, "labels": TWO_CLASSES}))
    return folder


def test_test_figures_count_only_photos_no_averaged_model_trained_on(tmp_path: Path) -> None:
    data = portrait_subset(tmp_path / "faces", per_class=3)  # six photos; sorted: 3 with_mask, 3 without_mask
    scenes = scene_subset(tmp_path / "scenes", per_split=2, splits=("val",))
    a = _run(tmp_path / "a", data, ["test", "test", "val", "test", "val", "train"], {"with_mask": 0.9,
                                                                                      "without_mask": 0.1})
    b = _run(tmp_path / "b", data, ["test", "train", "val", "test", "train", "val"], {"with_mask": 0.2,
                                                                                       "without_mask": 0.8})
    with pytest.raises(ValueError, match="holds a model"):
        average_models([a, b], a, scenes)
    meta = average_models([a, b], tmp_path / "soup", scenes)["metadata"]
    assert meta["test_photos"] == 2  # the first and the fourth photo: test photos of both runs
    assert [row["model"] for row in meta["test_by_model"]] == ["average", str(a), str(b)]
    assert meta["test_by_model"][1]["two_class_accuracy"] == 0.5  # run a says with_mask to both
    with open(tmp_path / "soup" / "split.csv", newline="") as handle:
        kept = [row["split"] for row in sorted(csv.DictReader(handle), key=lambda r: Path(r["file"]).name)]
    # b trained on the second photo (a's test) and the fifth (a's val): neither counts for the average.
    assert kept == ["test", "excluded", "val", "test", "excluded", "train"]
    assert "split_fingerprint" not in meta and "split_counts" not in meta  # the runs were split apart
    soup_report = json.loads((tmp_path / "soup" / "report.json").read_text())
    assert soup_report["test"]["n"] == 2
    # The figures are the average's; what the first run said of its own model is kept apart.
    assert soup_report["test_two_class_accuracy"] == meta["test_two_class_accuracy"]
    assert soup_report["test_bare_with_hand_accuracy"] == meta["test_bare_with_hand_accuracy"]
    assert meta["test_bare_with_hand_accuracy"] in (0.0, 1.0)  # one bare test photo, run b's fixed "bare" half
    assert soup_report["metadata"] == MaskClassifier(tmp_path / "soup" / "mask_classifier.onnx").metadata


def test_a_split_file_from_another_run_is_refused(tmp_path: Path) -> None:
    scenes = scene_subset(tmp_path / "scenes", per_split=2, splits=("val",))
    run = tmp_path / "run"
    run.mkdir()
    model = onnx.load(str(write_fixed_classifier(run / "mask_classifier.onnx", MASKED)))
    meta = json.loads(model.metadata_props[0].value)
    meta["split_fingerprint"] = "0123456789abcdef"  # the split this model was trained on: not the file below
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(run / "mask_classifier.onnx"))
    (run / "split.csv").write_text("file,label,sha256,group,split,source,box\na.jpg,with_mask,aa,aa,test,0,\n")
    (run / "report.json").write_text("{}")
    with pytest.raises(ValueError, match="not the split"):
        average_models([run, write_fixed_classifier(tmp_path / "b.onnx", BARE)], tmp_path / "soup", scenes)


def test_face_models_are_averaged_toward_the_stock_weights(yunet_path: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`maskwatch average` of the shipped face model and the stock YuNet: the weights' weighted mean, a file
    that cv2.FaceDetectorYN loads, the photo defaults chosen again on --scenes val and the members recorded."""
    import cv2

    from maskwatch.faces.yunet import (
        METADATA_EXTRA_PASS_MAX_FACE,
        METADATA_MIRROR_EXTRA_PASSES,
        METADATA_SCORE_THRESHOLD,
        SHIPPED_FACE_MODEL,
        YuNetDetector,
    )
    from maskwatch.training.detector.average import average_detectors

    scenes = scene_subset(tmp_path / "scenes", per_split=2, splits=("val",))
    out = tmp_path / "soup"
    assert main(["average", str(SHIPPED_FACE_MODEL), "stock", "--weights", "0.7", "0.3",
                 "--scenes", str(scenes), "--out", str(out)]) == 0
    model = out / "face_detector.onnx"
    assert "photo defaults:" in capsys.readouterr().out

    def weights(path: Path) -> dict[str, np.ndarray]:
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}

    mine, shipped, stock = weights(model), weights(SHIPPED_FACE_MODEL), weights(yunet_path)
    moved = [name for name in mine if mine[name].dtype.kind == "f" and not np.allclose(shipped[name], stock[name])]
    assert moved  # the two models differ, so the mean is neither of them
    for name in moved:
        np.testing.assert_allclose(mine[name], 0.7 * shipped[name] + 0.3 * stock[name], rtol=1e-5, atol=1e-6)
    metadata = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    members = json.loads(metadata["maskwatch.averaged_from"])
    assert [m["weight"] for m in members] == [0.7, 0.3]
    assert [m["sha256"] for m in members] == [sha256_of(SHIPPED_FACE_MODEL), sha256_of(yunet_path)]
    figures = json.loads(metadata["maskwatch.val_figures"])["scenes"]
    assert figures["images"] == 2 and figures["score_threshold"] == float(metadata[METADATA_SCORE_THRESHOLD])
    assert "maskwatch.best_epoch" not in metadata  # a fact of the first model, not of the mean
    # How its extra passes run is chosen with the photo defaults: the first file's entries are not carried over
    # (average_detectors drops them), `maskwatch average` writes them again.
    carried = average_detectors([SHIPPED_FACE_MODEL, yunet_path], ["shipped", "stock"], [0.7, 0.3])
    assert not {p.key for p in carried.metadata_props} & {METADATA_MIRROR_EXTRA_PASSES, METADATA_EXTRA_PASS_MAX_FACE}
    written = YuNetDetector(model)
    assert (written.mirror_extra_passes, written.extra_pass_max_face) == (False, 48)
    assert json.loads((out / "average.json").read_text())["sha256"] == sha256_of(model)
    assert "Chosen: extra passes" in (out / "detector_val.md").read_text()
    image = cv2.imread(str(Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"))
    detector = cv2.FaceDetectorYN.create(str(model), "", (image.shape[1], image.shape[0]), 0.5)
    assert detector.detect(image)[1] is not None  # loads unchanged in OpenCV and still finds the face


def test_face_model_averages_refuse_what_they_cannot_mean(yunet_path: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from maskwatch.faces.yunet import SHIPPED_FACE_MODEL

    scenes = scene_subset(tmp_path / "scenes", per_split=1, splits=("val",))
    assert main(["average", str(SHIPPED_FACE_MODEL), "stock", "--weights", "0.5", "0.6",
                 "--scenes", str(scenes), "--out", str(tmp_path / "a")]) == 2
    assert "summing to 1" in capsys.readouterr().err
    classifier = write_fixed_classifier(tmp_path / "c.onnx", MASKED)
    assert main(["average", str(SHIPPED_FACE_MODEL), str(classifier), "--scenes", str(scenes),
                 "--out", str(tmp_path / "b")]) == 2
    assert "not the same network" in capsys.readouterr().err
    assert main(["average", str(SHIPPED_FACE_MODEL), "stock", "--split", "train", "--scenes", str(scenes),
                 "--out", str(tmp_path / "c")]) == 2
    assert "val split" in capsys.readouterr().err
    assert main(["average", "stock", str(SHIPPED_FACE_MODEL), "--scenes", str(scenes),
                 "--out", str(tmp_path / "d")]) == 2
    assert "put first one that `maskwatch train-detector` wrote" in capsys.readouterr().err
    assert main(["average", str(SHIPPED_FACE_MODEL), str(SHIPPED_FACE_MODEL), "--scenes", str(scenes),
                 "--out", str(tmp_path / "d")]) == 2
    assert "are the same model" in capsys.readouterr().err
    # Good models and a scene set that is not there: refused before anything is written.
    assert main(["average", str(SHIPPED_FACE_MODEL), "stock", "--scenes", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "e")]) == 2
    assert "no such folder" in capsys.readouterr().err
    # A scene set without val photos: the defaults cannot be chosen, and --out is left as it was.
    empty = tmp_path / "empty"
    (empty / "annotations").mkdir(parents=True)
    assert main(["average", str(SHIPPED_FACE_MODEL), "stock", "--scenes", str(empty),
                 "--out", str(tmp_path / "f")]) == 2
    assert "maskwatch:" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcdef")
