"""A small real training run, the export's metadata, and PyTorch/onnxruntime parity."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import BARE_JPG, DATASET, MASKED_JPG

torch = pytest.importorskip("torch", reason="training tests need the train extra")

from maskwatch.classifier import MaskClassifier  # noqa: E402
from maskwatch.crops import face_crop  # noqa: E402
from maskwatch.evaluation.run_report import write_evaluation  # noqa: E402
from maskwatch.faces import YuNetDetector  # noqa: E402
from maskwatch.images import load_image  # noqa: E402
from maskwatch.training.export import export_onnx  # noqa: E402
from maskwatch.training.model import build_masknet, freeze  # noqa: E402
from maskwatch.training.train import TrainConfig  # noqa: E402
from maskwatch.training.tune import tune  # noqa: E402


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, yunet_path: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(data_dir=str(DATASET), out_dir=str(out), face_model=str(yunet_path), limit=15,
                         views=2, max_epochs=15, patience=5, cache_dir=str(out / "cache"), unfreeze="0,1",
                         finetune_epochs=1, painted_views=1)
    # tune = prepare, two heads, a fine-tuning of the top block against the frozen model, finish:
    # the whole train path and more; then the evaluation report, as the command writes it.
    report = tune(config, trials=2)
    write_evaluation(out)
    return out, report


def test_training_writes_model_split_and_report(small_run: tuple[Path, dict]) -> None:
    out, report = small_run
    for name in ("mask_classifier.onnx", "split.csv", "report.json", "history.csv", "tune.csv", "tune.md",
                 "tune_unfreeze.md", "tune_unfreeze.csv", "evaluation.md"):
        assert (out / name).is_file(), name
    assert len(report["tune"]["trials"]) == 2
    assert [row["unfreeze"] for row in report["unfreeze"]["rows"]] == ["0", "1"]
    assert report["unfreeze"]["chosen"] in ("0", "1")
    assert report["config"]["unfreeze"] == report["unfreeze"]["chosen"]
    assert 0 <= report["test_bare_with_painted_mask_accuracy"] <= 1
    assert report["counts"]["near_duplicate_bits"] == 4
    assert report["test_bare_with_hand_accuracy"] is None or 0 <= report["test_bare_with_hand_accuracy"] <= 1
    assert report["counts"]["images"] == 30
    assert sum(report["counts"][f"{s}_images"] for s in ("train", "val", "test")) == 30
    assert 0.0 <= report["test"]["accuracy"] <= 1.0
    assert set(report["test_by_face_px"]) == {"16", "24", "32", "48"}
    assert json.loads((out / "report.json").read_text())["test"] == report["test"]


def test_exported_model_carries_its_metadata(small_run: tuple[Path, dict]) -> None:
    out, report = small_run
    classifier = MaskClassifier(out / "mask_classifier.onnx")
    meta = classifier.metadata
    assert meta["labels"] == ["with_mask", "without_mask"]
    assert meta["input_size"] == 128 and meta["crop_margin"] == 0.2
    assert meta["mean"] == [127.0, 127.0, 127.0] and meta["std"] == [128.0, 128.0, 128.0]
    assert meta["backbone"] == "efficientnet_lite0"
    assert len(meta["data_fingerprint"]) == 16 and len(meta["split_fingerprint"]) == 16
    assert meta["test_accuracy"] == report["test"]["accuracy"]


def test_split_file_keeps_duplicates_together(small_run: tuple[Path, dict]) -> None:
    out, _ = small_run
    with open(out / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    splits: dict[str, set[str]] = {}
    for row in rows:
        splits.setdefault(row["sha256"], set()).add(row["split"])
    assert all(len(v) == 1 for v in splits.values())


def test_pytorch_and_onnxruntime_agree(tmp_path: Path, yunet_path: Path) -> None:
    torch.manual_seed(0)
    model = build_masknet("efficientnet_lite0", 128, hidden=64, dropout=0.3)
    freeze(model)
    metadata = {"labels": ["with_mask", "without_mask"], "input_size": 128, "mean": [127.0] * 3,
                "std": [128.0] * 3, "channel_order": "RGB", "crop_margin": 0.2}
    classifier = MaskClassifier(export_onnx(model, tmp_path / "m.onnx", 128, metadata))
    detector = YuNetDetector(yunet_path)
    crops = []
    for path in (MASKED_JPG, BARE_JPG):
        image = load_image(path)
        crops += [face_crop(image, face.box, 128, 0.2) for face in detector.detect(image)]
    batch = classifier.preprocess(crops)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    got = classifier.probabilities(crops)
    print(f"max |torch - onnxruntime| = {np.abs(expected - got).max():.2e}")
    assert np.abs(expected - got).max() < 1e-4


def test_paper_preset_trains_and_exports_with_keras_layout_weights(tmp_path: Path, yunet_path: Path) -> None:
    """The paper path end to end (ResNet50V2 + Flatten head, sigmoid out) on a weights file in Keras' layout.

    The weights are random: this proves the machinery, not the paper's accuracy (the README says why).
    """
    pytest.importorskip("h5py", reason="Keras weights files need h5py (train extra)")
    from test_resnet50v2 import randomize_bn, torch_to_keras_arrays, write_keras2_h5

    from maskwatch.training.backbones.resnet50v2 import ResNet50V2
    from maskwatch.training.train import train

    source = ResNet50V2()
    randomize_bn(source, seed=2)
    weights = tmp_path / "resnet50v2_notop.h5"
    write_keras2_h5(weights, ["input_1", *[n for n, _ in source.keras_layers()]], torch_to_keras_arrays(source))
    config = TrainConfig(data_dir=str(DATASET), out_dir=str(tmp_path / "run"), face_model=str(yunet_path), limit=5,
                         views=1, max_epochs=2, patience=1, cache_dir=str(tmp_path / "cache"), backbone="resnet50v2",
                         head="paper", input_size=224, hidden=8, dropout=0.5, backbone_weights=str(weights))
    report = train(config)
    classifier = MaskClassifier(tmp_path / "run" / "mask_classifier.onnx")
    assert classifier.input_size == 224 and classifier.metadata["output"] == "sigmoid"
    assert classifier.metadata["head"].startswith("Flatten -> Dense(8, ReLU)")
    assert classifier.mean.ravel().tolist() == [127.5] * 3
    crop = np.zeros((224, 224, 3), np.uint8)
    probabilities = classifier.probabilities([crop])
    assert probabilities.shape == (1, 2) and ((probabilities > 0) & (probabilities < 1)).all()
    assert report["test"]["n"] == report["counts"]["test_images"]


def test_finetune_changes_only_the_unfrozen_blocks(tmp_path: Path, yunet_path: Path) -> None:
    """One phase-2 epoch: the top blocks learn; the rest of the backbone and every batch-norm statistic stay."""
    from maskwatch.training.backbones import backbone_spec, create_backbone
    from maskwatch.training.finetune import set_trainable, train_epoch
    from maskwatch.training.model import build_head
    from maskwatch.training.train import make_loss, prepare

    config = TrainConfig(data_dir=str(DATASET), out_dir=str(tmp_path / "run"), face_model=str(yunet_path), limit=4,
                         views=1, cache_dir=str(tmp_path / "cache"))
    prep = prepare(config)
    module = create_backbone("efficientnet_lite0", input_size=128)
    before = {name: value.clone() for name, value in module.state_dict().items()}
    trainable = set_trainable(module, "2")
    top = {id(p) for block in module.blocks()[-2:] for p in block.parameters()}
    assert trainable == sum(p.numel() for p in module.parameters() if id(p) in top) > 0
    head = build_head("gap", 1280, 8, 0.0)
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.5)
    names, y = prep.items("train", ["v100"])
    train_epoch(module, head, optimizer, make_loss("softmax", 2), names, y, prep, backbone_spec(config.backbone), 0)
    parameters = dict(module.named_parameters())
    for name, value in module.state_dict().items():
        changed = not torch.equal(before[name], value)
        learns = name in parameters and id(parameters[name]) in top
        assert changed == learns, name


def test_train_with_finetuning_exports_what_it_scored(tmp_path: Path, yunet_path: Path) -> None:
    from maskwatch.training.train import train

    config = TrainConfig(data_dir=str(DATASET), out_dir=str(tmp_path / "run"), face_model=str(yunet_path), limit=6,
                         views=1, max_epochs=3, patience=1, cache_dir=str(tmp_path / "cache"), unfreeze="all",
                         finetune_epochs=1, finetune_lr=1e-3)
    report = train(config)
    summary = report["finetune"]
    assert summary["unfreeze"] == "all" and summary["epochs"] == 1 and summary["trainable_parameters"] > 3_000_000
    with open(tmp_path / "run" / "history.csv", newline="") as handle:
        phases = [row["phase"] for row in csv.DictReader(handle)]
    assert phases[-1] == "2" and phases[0] == "1"
    metadata = MaskClassifier(tmp_path / "run" / "mask_classifier.onnx").metadata
    assert "fine-tuned on mask data (whole backbone)" in metadata["backbone_weights"]
    # The evaluation re-scores the exported file with onnxruntime: it agrees with the fine-tuned network's scores.
    write_evaluation(tmp_path / "run")
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert evaluation["test"]["accuracy"] == report["test"]["accuracy"]
    assert [evaluation["test_by_face_px"][px]["accuracy"] for px in ("16", "48")] == [
        report["test_by_face_px"][px]["accuracy"] for px in ("16", "48")]
    # A second run goes on from the first one's fine-tuned weights: it starts where the first one ended.
    assert (tmp_path / "run" / "backbone.pt").is_file()
    again = train(replace(config, out_dir=str(tmp_path / "again"), init_from=str(tmp_path / "run")))
    assert again["finetune"]["start_val_loss"] == pytest.approx(summary["best_val_loss"], rel=1e-4)
    frozen_run = tmp_path / "frozen"  # a run without a fine-tuned backbone cannot be gone on from
    frozen_run.mkdir()
    (frozen_run / "report.json").write_text((tmp_path / "run" / "report.json").read_text())
    with pytest.raises(ValueError, match="no backbone.pt"):
        train(replace(config, out_dir=str(tmp_path / "bad"), init_from=str(frozen_run)))


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory, yunet_path: Path) -> tuple[Path, Path, dict]:
    """A class-per-folder set and a VOC scene set trained together: three classes, two sources."""
    from conftest import scene_subset

    from maskwatch.training.train import train

    scenes = scene_subset(tmp_path_factory.mktemp("scenes"))
    out = tmp_path_factory.mktemp("mixed")
    config = TrainConfig(data_dir=str(DATASET), extra_data=[str(scenes)], out_dir=str(out),
                         face_model=str(yunet_path), limit=4, views=2, max_epochs=5, patience=2,
                         cache_dir=str(out / "cache"), painted_views=1, below_nose_views=1, unfreeze="1",
                         finetune_epochs=1)
    report = train(config)
    write_evaluation(out)
    return out, scenes, report


def test_mixed_sources_train_three_classes_and_keep_the_scene_split(mixed_run: tuple[Path, Path, dict]) -> None:
    out, scenes, report = mixed_run
    assert report["labels"] == ["incorrect_mask", "with_mask", "without_mask"]
    by_source = report["counts"]["by_source"]
    assert set(by_source[str(scenes)]) == {"train", "val"}  # the manifest's split, no test split
    assert set(by_source[str(DATASET)]) == {"train", "val", "test"}
    assert by_source[str(scenes)]["train"]["incorrect_mask"] >= 1
    with open(out / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scene_rows = [r for r in rows if r["source"] == "1"]
    assert scene_rows and all(len(r["box"].split()) == 4 for r in scene_rows)
    assert all(r["box"] == "" for r in rows if r["source"] == "0")
    assert {r["split"] for r in scene_rows} <= {"train", "val"}
    # The operating point is chosen on the scene faces of val, and every figure is reported per source.
    search = report["operating_point"]["search"]
    assert search["chosen_on"].startswith("validation faces of the scene sets")
    assert search["chosen_macro_f1"] >= search["default_macro_f1"]
    assert set(report["val_by_source"]) == {str(DATASET), str(scenes)}
    assert report["test_two_class_accuracy"] is not None
    classifier = MaskClassifier(out / "mask_classifier.onnx")
    assert classifier.labels == report["labels"]
    assert classifier.operating_point.mask_threshold == report["operating_point"]["mask_threshold"]
    assert (out / "evaluation.md").is_file()
    # Bare faces with masks painted over and below the nose trained both phases; the test split has a figure.
    assert report["metadata"]["maskwatch_train_config"]["below_nose_views"] == 1
    assert report["finetune"]["images_per_epoch"] > report["counts"]["train_images"]
    assert 0 <= report["test_bare_with_mask_painted_below_nose_accuracy"] <= 1


def test_split_seed_keeps_the_split_under_another_training_seed(tmp_path: Path, yunet_path: Path) -> None:
    """Members of a mean of weights share a split: --split-seed holds it while --seed changes the training."""
    from maskwatch.training.train import prepare

    def prepared(name: str, **seeds: int) -> tuple[str, np.ndarray]:
        """The run's split file, and the first training view of its first training sample."""
        config = TrainConfig(data_dir=str(DATASET), out_dir=str(tmp_path / name), face_model=str(yunet_path),
                             limit=15, cache_dir=str(tmp_path / "cache"), **seeds)
        prep = prepare(config)
        first_train = min(s.sha256 for s in prep.by_split["train"])
        return (tmp_path / name / "split.csv").read_text(), prep.view(f"{first_train}:v1")

    split, view = prepared("seed0", seed=0)
    same_split, other_view = prepared("seed3-split0", seed=3, split_seed=0)
    assert same_split == split
    assert not np.array_equal(other_view, view)  # the training seed still draws the augmentation
    assert prepared("seed3", seed=3)[0] != split


def test_split_from_keeps_another_runs_split_file(tmp_path: Path, yunet_path: Path) -> None:
    """--split-from deals nothing: each sample keeps the split and group the file gives it, even one moved by hand;
    a sample the file lacks is an error."""
    from maskwatch.training.train import prepare

    def config(name: str, **settings: object) -> TrainConfig:
        return TrainConfig(data_dir=str(DATASET), out_dir=str(tmp_path / name), face_model=str(yunet_path),
                           limit=15, cache_dir=str(tmp_path / "cache"), **settings)  # type: ignore[arg-type]

    prepare(config("first"))
    with open(tmp_path / "first" / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    moved = next(r for r in rows if r["split"] == "test")
    moved["split"] = "train"  # no seed deals this split
    given = tmp_path / "given.csv"
    with open(given, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    prep = prepare(config("kept", seed=3, split_seed=0, split_from=str(given)))
    assert (tmp_path / "kept" / "split.csv").read_text() == given.read_text()
    assert moved["sha256"] in {s.sha256 for s in prep.by_split["train"]}

    with open(given, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[1:])
    with pytest.raises(ValueError, match="1 samples are not in the split file"):
        prepare(config("lacking", split_from=str(given)))


def test_below_nose_views_need_the_class(tmp_path: Path, yunet_path: Path) -> None:
    from maskwatch.training.train import train

    config = TrainConfig(data_dir=str(DATASET), out_dir=str(tmp_path / "run"), face_model=str(yunet_path),
                         limit=4, below_nose_views=1, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="incorrect_mask, a class none of the data folders has"):
        train(config)


def test_class_weights_favour_the_rare_class() -> None:
    from maskwatch.training.train import class_weights, make_loss

    y = np.array([0] * 10 + [1] * 90 + [2] * 100)
    sqrt, inverse = class_weights(y, 3, "sqrt"), class_weights(y, 3, "inverse")
    assert class_weights(y, 3, "none") is None
    assert sqrt[0] > sqrt[1] > sqrt[2] and inverse[0] / inverse[2] == pytest.approx(10.0)
    assert float(sqrt.mean()) == pytest.approx(1.0)
    logits, target = torch.zeros(4, 3), torch.tensor([0, 1, 2, 2])
    assert float(make_loss("softmax", 3, sqrt)(logits, target)) == pytest.approx(np.log(3), rel=1e-5)
    with pytest.raises(ValueError, match="class balance"):
        class_weights(y, 3, "cube")
