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
    cache = FaceCropCache(root / "cache", YuNetDetector(), DEFAULT_MARGIN, HIGH_THRESHOLD, fallback)
    astronaut = next(s for s in samples if s.path.name == ASTRONAUT.name)
    return cache.build(samples)[astronaut.sha256], cache


def test_a_fallback_crops_the_best_weak_face_instead_of_the_whole_photo(tmp_path: Path) -> None:
    faces = YuNetDetector(score_threshold=STORE_THRESHOLD, extra_scales=()).detect(load_image(ASTRONAUT))
    best = max(faces, key=lambda f: f.score)
    largest = max(faces, key=lambda f: f.width * f.height)
    # What the test stands on: no face reaches the threshold, and the likeliest face is not the largest box.
    assert best.score < HIGH_THRESHOLD and best is not largest

    whole, _ = crop_record(tmp_path / "off", fallback=0.0)
    assert whole.whole_image and whole.used_box == [0, 0, whole.width, whole.height]
    weak, cache = crop_record(tmp_path / "on", fallback=STORE_THRESHOLD)
    assert not weak.whole_image
    assert weak.used_box == pytest.approx(list(best.box))
    assert "-b0.1-" in cache.folder.name  # other crops, so another cache folder


def test_a_run_configuration_brings_its_fallback_and_an_older_one_none(tmp_path: Path) -> None:
    config = {"face_threshold": 0.5, "crop_margin": DEFAULT_MARGIN}
    assert run_crop_cache(config, tmp_path).fallback == 0.0
    assert run_crop_cache({**config, "face_fallback": 0.3}, tmp_path).fallback == 0.3


@pytest.mark.parametrize("fallback", [0.05, 0.6])
def test_a_fallback_below_the_stored_scores_or_above_the_threshold_is_refused(tmp_path: Path,
                                                                             fallback: float) -> None:
    with pytest.raises(ValueError, match="fallback face score"):
        FaceCropCache(tmp_path, YuNetDetector(), DEFAULT_MARGIN, 0.5, fallback)


def test_train_passes_its_fallback_to_the_crops(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs the train extra")
    done = subprocess.run([sys.executable, "-m", "maskwatch.cli", "train", str(photo_folder(tmp_path / "photos")),
                           "--out", str(tmp_path / "run"), "--face-fallback", "0.05"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "fallback face score must be 0 (off) or from 0.1" in done.stderr
