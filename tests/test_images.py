from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from badfiles import BAD, write_bad_inputs
from conftest import BARE_JPG
from PIL import Image

from maskwatch.images import ImageError, decode_image, load_image


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_bad_inputs(tmp_path_factory.mktemp("bad"), BARE_JPG)


@pytest.mark.parametrize("name", sorted(BAD))
def test_unreadable_files_raise_a_clear_error(bad_inputs: dict[str, Path], name: str) -> None:
    with pytest.raises(ImageError) as info:
        load_image(bad_inputs[name])
    assert str(info.value)  # a message a person can read


def test_pixel_limit_is_checked_before_decoding(bad_inputs: dict[str, Path]) -> None:
    # 400 MP: past twice Pillow's own limit, so Pillow refuses it first; the message still gives the size.
    with pytest.raises(ImageError, match="image is 400,000,000 pixels, over the limit of 40,000,000 pixels"):
        load_image(bad_inputs["huge.png"])
    assert load_image(bad_inputs["huge.png"], max_pixels=400_000_000).shape == (20000, 20000, 3)


@pytest.mark.parametrize("name", ["gray.jpg", "rgba.png", "gray16.png", "cmyk.jpg", "photo.webp",
                                  "one_pixel.png", "name with spaces ünïcode.jpg"])
def test_odd_formats_decode_to_bgr(bad_inputs: dict[str, Path], name: str) -> None:
    image = load_image(bad_inputs[name])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_16_bit_png_is_scaled_not_clipped(bad_inputs: dict[str, Path]) -> None:
    image = load_image(bad_inputs["gray16.png"])
    reference = np.asarray(Image.open(BARE_JPG).convert("L"), dtype=np.float32)
    assert abs(float(image[:, :, 0].mean()) - float(reference.mean())) < 2.0


def test_exif_orientation_is_applied(bad_inputs: dict[str, Path]) -> None:
    upright = load_image(BARE_JPG)
    rotated = load_image(bad_inputs["rotated_exif.jpg"])
    assert rotated.shape == upright.shape
    assert np.abs(rotated.astype(int) - upright.astype(int)).mean() < 8  # only JPEG noise differs


def test_missing_path_and_directory() -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image("/nonexistent/photo.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(Path(__file__).parent)


def test_arrays_and_bytes_are_accepted() -> None:
    data = BARE_JPG.read_bytes()
    from_bytes = decode_image(data)
    assert np.array_equal(load_image(bytearray(data)), from_bytes)
    assert load_image(from_bytes[:, :, 0]).shape == from_bytes.shape  # grayscale array
    bgra = np.dstack([from_bytes, np.full(from_bytes.shape[:2], 255, np.uint8)])
    assert np.array_equal(load_image(bgra), from_bytes)
    with pytest.raises(ImageError):
        load_image(np.zeros((0, 0, 3), np.uint8))
