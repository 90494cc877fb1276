"""Mistakes an engineer makes with training data and run folders: each one is refused by name before the long
work starts, never trained on in silence (found by a review that tried them; each check was seen to fail
without its fix)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BARE_JPG, MASKED_JPG

from maskwatch.crops import face_crop
from maskwatch.model_files import atomic_file
from maskwatch.training.data import Sample, apply_split_file, scan_dataset, scan_scenes
from maskwatch.voc import read_voc

CLI = [sys.executable, "-m", "maskwatch.cli"]


def class_folders(root: Path, names: dict[str, list[Path]]) -> Path:
    for name, photos in names.items():
        (root / name).mkdir(parents=True)
        for i, photo in enumerate(photos):
            shutil.copy(photo, root / name / f"{i}{photo.suffix}")
    return root


def test_class_folders_are_mapped_checked_and_never_empty(tmp_path: Path) -> None:
    aliases = class_folders(tmp_path / "aliases", {"mask": [MASKED_JPG], "no_mask": [BARE_JPG]})
    (aliases / "no_mask" / ".ipynb_checkpoints").mkdir()
    shutil.copy(MASKED_JPG, aliases / "no_mask" / ".ipynb_checkpoints" / "copy.jpg")  # hidden: not a sample
    samples, labels = scan_dataset(aliases)
    assert labels == ["with_mask", "without_mask"] and len(samples) == 2
    misspelt = class_folders(tmp_path / "misspelt", {"with_mask": [MASKED_JPG], "withot_mask": [BARE_JPG]})
    with pytest.raises(ValueError, match="withot_mask.*unknown class 'withot_mask'"):
        scan_dataset(misspelt)
    empty = class_folders(tmp_path / "empty", {"with_mask": [MASKED_JPG], "without_mask": []})
    with pytest.raises(ValueError, match="without_mask holds no images"):
        scan_dataset(empty)


VOC = """<annotation><filename>scene.jpg</filename><size><width>100</width><height>80</height></size>
<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>10</ymin><xmax>{x2}</xmax><ymax>60</ymax></bndbox></object>
</annotation>"""


def test_voc_classes_and_boxes_are_checked(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    cv2.imwrite(str(scenes / "scene.jpg"), np.full((80, 100, 3), 128, np.uint8))
    (scenes / "scene.xml").write_text(VOC.format(name="with_mask_on", x1=10, x2=60))
    with pytest.raises(ValueError, match="scene.xml: unknown class 'with_mask_on'"):
        scan_scenes(scenes)
    (scenes / "scene.xml").write_text(VOC.format(name="with_mask", x1=150, x2=200))
    with pytest.raises(ValueError, match="lies wholly outside the 100x80 image"):
        read_voc(scenes / "scene.xml")
    with pytest.raises(ValueError, match="lies outside the 100x80 image"):  # no size in the XML to check it by
        face_crop(np.zeros((80, 100, 3), np.uint8), (400, 10, 450, 60), 64, 0.2)


def test_a_split_file_must_be_a_runs(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,label,sha256\nwith_mask/a.jpg,with_mask,abc\n")
    with pytest.raises(ValueError, match="is not a run's split.csv: no column group, split"):
        apply_split_file([Sample(path=Path("a.jpg"), label="with_mask", sha256="abc", group="abc")], manifest)


def test_a_training_configuration_checks_init_from(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs the train extra")
    from maskwatch.training.train import TrainConfig

    with pytest.raises(ValueError, match="give --unfreeze N or all"):
        TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), init_from=str(tmp_path))
    with pytest.raises(ValueError, match="no report.json, backbone.pt, head.pt"):
        TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), init_from=str(tmp_path / "x"),
                    unfreeze="all")


def test_a_split_with_an_empty_part_is_refused_before_training() -> None:
    pytest.importorskip("torch", reason="training needs the train extra")
    from maskwatch.training.train import check_split

    def sample(label: str, split: str) -> Sample:
        return Sample(path=Path(f"{label}-{split}.jpg"), label=label, sha256=f"{label}{split}", group="", split=split)

    labels = ["with_mask", "without_mask"]
    full = [sample(label, split) for label in labels for split in ("train", "val", "test")]
    check_split(full, labels)
    with pytest.raises(ValueError, match="the test split is empty"):  # a scene set whose manifest has no test rows
        check_split([s for s in full if s.split != "test"], labels)
    with pytest.raises(ValueError, match="no training samples of without_mask"):
        check_split([s for s in full if (s.label, s.split) != ("without_mask", "train")], labels)


def test_train_refuses_an_out_that_is_a_file_or_holds_a_run(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs the train extra")
    data = class_folders(tmp_path / "data", {"with_mask": [MASKED_JPG], "without_mask": [BARE_JPG]})
    afile = tmp_path / "afile.txt"
    afile.write_text("keep me")
    old_run = tmp_path / "old"
    old_run.mkdir()
    (old_run / "split.csv").write_text("the old run's split")
    for out, says in ((afile, "is a file"), (old_run, "already holds a run (split.csv)")):
        result = subprocess.run([*CLI, "train", str(data), "--out", str(out)], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2 and says in result.stderr, result.stderr
    assert afile.read_text() == "keep me" and (old_run / "split.csv").read_text() == "the old run's split"


def test_model_files_are_written_readable_as_open_would(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_file(tmp_path / "model.onnx") as handle:
        handle.write(b"bytes")
    assert stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode) == 0o666 & ~umask
