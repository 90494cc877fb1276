"""Training augmentations on a real face crop, and the mask-appearance rule of the evaluation report."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import BARE_JPG

from maskwatch.crops import face_crop
from maskwatch.evaluation.appearance import lower_face, mask_appearance
from maskwatch.faces import YuNetDetector
from maskwatch.images import load_image
from maskwatch.training.augment import (
    NOSE_AND_MOUTH,
    mask_texture,
    occlude_lower_face,
    paint_mask,
    random_view,
)

SIZE = 160


@pytest.fixture(scope="module")
def bare_crop(yunet_path: Path) -> np.ndarray:
    image = load_image(BARE_JPG)
    face = max(YuNetDetector(yunet_path).detect(image), key=lambda f: f.width * f.height)
    return face_crop(image, face.box, SIZE, 0.2)


def changed_rows(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Share of changed pixels in each row."""
    return (np.abs(before.astype(int) - after.astype(int)).max(axis=2) > 10).mean(axis=1)


@pytest.mark.parametrize("seed", range(6))
def test_painted_mask_covers_the_lower_face_only(bare_crop: np.ndarray, seed: int) -> None:
    painted = paint_mask(bare_crop, np.random.default_rng(seed))
    assert painted.shape == bare_crop.shape and painted.dtype == np.uint8
    rows = changed_rows(bare_crop, painted)
    inner = SIZE / 1.4
    top = int((SIZE - inner) / 2)
    # Eyes and forehead (the upper 40 % of the face box) stay; mouth and chin are covered.
    assert rows[top:int(top + 0.4 * inner)].max() < 0.1
    assert rows[int(top + 0.7 * inner):int(top + 0.9 * inner)].mean() > 0.4


@pytest.mark.parametrize("seed", range(6))
def test_mask_painted_below_the_nose_leaves_the_nose_bare(bare_crop: np.ndarray, seed: int) -> None:
    nose, mouth = 0.62, 0.8
    painted = paint_mask(bare_crop, np.random.default_rng(seed), below_nose=(nose, mouth))
    rows = changed_rows(bare_crop, painted)
    inner = SIZE / 1.4
    top = int((SIZE - inner) / 2)
    # Eyes and nose (down to the nose tip) stay; the mouth and chin are covered.
    assert rows[top:int(top + nose * inner)].max() < 0.1
    assert rows[int(top + (mouth + 0.02) * inner):int(top + 0.95 * inner)].mean() > 0.4
    over_nose = changed_rows(bare_crop, paint_mask(bare_crop, np.random.default_rng(seed)))
    assert over_nose[int(top + 0.6 * inner)] > rows[int(top + 0.6 * inner)]  # the other one covers the nose


def test_nose_and_mouth_come_from_the_landmarks(bare_crop: np.ndarray, yunet_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs the train extra")
    from maskwatch.training.train import nose_and_mouth

    detector = YuNetDetector(yunet_path, extra_scales=())
    nose, mouth = nose_and_mouth(bare_crop, detector, 0.2)
    assert 0.45 < nose < mouth < 0.95
    assert (nose, mouth) != NOSE_AND_MOUTH
    assert nose_and_mouth(np.full_like(bare_crop, 128), detector, 0.2) == NOSE_AND_MOUTH  # no face: the medians


def test_painted_masks_vary_and_repeat_with_the_seed(bare_crop: np.ndarray) -> None:
    first = paint_mask(bare_crop, np.random.default_rng(1))
    assert np.array_equal(first, paint_mask(bare_crop, np.random.default_rng(1)))
    colours = {tuple(np.median(lower_face(paint_mask(bare_crop, np.random.default_rng(s))).reshape(-1, 3), 0))
               for s in range(8)}
    assert len(colours) >= 6


def test_textures_include_patterns() -> None:
    deviations = [float(mask_texture(64, np.random.default_rng(s)).std(axis=(0, 1)).max()) for s in range(30)]
    assert min(deviations) < 1.0  # plain cloth
    assert max(deviations) > 30.0  # stripes, checks, dots or prints


def test_hand_occlusion_keeps_the_eyes(bare_crop: np.ndarray) -> None:
    occluded = occlude_lower_face(bare_crop, np.random.default_rng(0))
    rows = changed_rows(bare_crop, occluded)
    top = int((SIZE - SIZE / 1.4) / 2)
    assert rows[top:int(top + 0.4 * SIZE / 1.4)].max() < 0.1 and rows.max() > 0.3


def test_random_view_is_reproducible_and_sized(bare_crop: np.ndarray) -> None:
    views = [random_view(bare_crop, 128, np.random.default_rng(7), paint=True) for _ in range(2)]
    assert views[0].shape == (128, 128, 3) and np.array_equal(views[0], views[1])
    assert not np.array_equal(views[0], random_view(bare_crop, 128, np.random.default_rng(8), paint=True))


def test_mask_appearance_rule(bare_crop: np.ndarray) -> None:
    dark = bare_crop.copy()
    region = lower_face(dark)
    region[:] = 25  # a view into ``dark``: a black mask
    assert mask_appearance(dark) == "dark"
    striped = bare_crop.copy()
    region = lower_face(striped)
    region[:, ::4] = 230
    region[:, 1::4] = 230
    region[:, 2::4] = 40
    region[:, 3::4] = 40
    assert mask_appearance(striped) == "patterned"
    plain = bare_crop.copy()
    lower_face(plain)[:] = 200
    assert mask_appearance(plain) == "plain"
    assert mask_appearance(cv2.GaussianBlur(bare_crop, (0, 0), 3)) != "patterned"  # smooth skin
