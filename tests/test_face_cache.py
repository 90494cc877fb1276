"""The face-crop cache: which face of a class-per-folder photo becomes its training crop."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from maskwatch.crops import DEFAULT_MARGIN
from maskwatch.faces import YuNetDetector
from maskwatch.images import load_image
from maskwatch.training.config import TrainConfig
from maskwatch.training.data import scan_dataset
from maskwatch.training.face_cache import STORE_THRESHOLD, CropRecord, FaceCropCache, run_crop_cache

ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"
# Above the shipped face model's score for the astronaut's face (0.89), so no face reaches it.
HIGH_THRESHOLD = 0.95


def photo_folder(root: Path) -> Path:
    """A class-per-folder set: the astronaut, and her mirror image as the other class's one photo."""
    for label in ("with_mask", "without_mask"):
        (root / label).mkdir(parents=True)
    shutil.copy(ASTRONAUT, root / "without_mask" / "astronaut.jpg")
    cv2.imwrite(str(root / "with_mask" / "mirrored.png"), cv2.flip(load_image(ASTRONAUT), 1))
    return root


def crop_record(root: Path, fallback: float) -> tuple[CropRecord, FaceCropCache]:
    samples, _labels = scan_dataset(photo_folder(root / "photos"))
    detector = YuNetDetector(extra_scales=())  # one pass, as training cuts its crops
    cache = FaceCropCache(root / "cache", detector, DEFAULT_MARGIN, HIGH_THRESHOLD, fallback)
    astronaut = next(s for s in samples if s.path.name == ASTRONAUT.name)
    return cache.build(samples)[astronaut.sha256], cache


def test_a_fallback_crops_the_best_weak_face_instead_of_the_whole_photo(tmp_path: Path) -> None:
    faces = YuNetDetector(score_threshold=STORE_THRESHOLD, extra_scales=()).detect(load_image(ASTRONAUT))
    best = max(faces, key=lambda f: f.score)
    largest = max(faces, key=lambda f: f.width * f.height)
    # What the test stands on: no face reaches the threshold, and the likeliest face is not the largest box.
    assert best.score < HIGH_THRESHOLD and best is not largest

    whole, off = crop_record(tmp_path / "off", fallback=0.0)
    assert whole.whole_image and not whole.fallback and whole.used_box == [0, 0, whole.width, whole.height]
    assert off.folder.name.startswith("crops-m0.2-t0.95-s160-f")  # without a fallback, the caches made before it
    weak, on = crop_record(tmp_path / "on", fallback=STORE_THRESHOLD)
    assert weak.fallback and not weak.whole_image
    assert weak.used_box == pytest.approx(list(best.box))
    assert on.folder.name.startswith("crops-m0.2-t0.95-b0.1-s160-f")  # other crops, so another cache folder


def test_a_run_configuration_brings_its_fallback_and_an_older_one_none(tmp_path: Path) -> None:
    config = {"face_threshold": 0.5, "crop_margin": DEFAULT_MARGIN}
    assert run_crop_cache(config, tmp_path).fallback == 0.0
    assert run_crop_cache({**config, "face_fallback": 0.3}, tmp_path).fallback == 0.3


@pytest.mark.parametrize("fallback", [0.05, 0.5, 0.6])
def test_a_fallback_below_the_stored_scores_or_at_the_threshold_is_refused(tmp_path: Path,
                                                                          fallback: float) -> None:
    with pytest.raises(ValueError, match="fallback face score"):
        FaceCropCache(tmp_path, YuNetDetector(), DEFAULT_MARGIN, 0.5, fallback)


def test_train_refuses_a_fallback_it_cannot_use_before_reading_data(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs the train extra")
    done = subprocess.run([sys.executable, "-m", "maskwatch.cli", "train", str(photo_folder(tmp_path / "photos")),
                           "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"),
                           "--face-fallback", "0.05"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "fallback face score must be 0 (off), or from 0.1" in done.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_a_training_configuration_checks_its_fallback() -> None:
    assert TrainConfig(data_dir="d", out_dir="o", face_fallback=0.3).face_fallback == 0.3
    with pytest.raises(ValueError, match="fallback face score"):
        TrainConfig(data_dir="d", out_dir="o", face_fallback=0.7)
