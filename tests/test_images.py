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


def test_float_arrays_by_their_range_and_nan_refused() -> None:
    bgr = decode_image(BARE_JPG.read_bytes())
    unit = bgr.astype(np.float32) / 255.0
    overshoot = unit.copy()  # what a cubic resize does to a 0..1 image: a little past 1.0
    overshoot[0, 0] = 1.1
    read = load_image(overshoot).astype(int)  # on the 0..1 scale, not as a black 0..255 image
    assert np.abs(read - bgr)[1:].max() <= 1 and (read[0, 0] == 255).all()
    assert np.abs(load_image(bgr.astype(np.float64)).astype(int) - bgr).max() <= 1  # 0..255 floats
    broken = unit.copy()
    broken[5, 5, 1] = np.nan
    with pytest.raises(ImageError, match="NaN or infinite"):
        load_image(broken)


def test_pillow_images_that_cannot_be_read_are_image_errors(bad_inputs: dict[str, Path]) -> None:
    from maskwatch.pipeline import MaskDetector  # analyze: a bad image is a result with an error, not a raise

    with pytest.raises(ImageError, match="corrupt, truncated or closed"):
        load_image(Image.open(bad_inputs["truncated.jpg"]))  # opened lazily: it fails when decoded
    closed = Image.open(BARE_JPG)
    closed.close()
    with pytest.raises(ImageError, match="corrupt, truncated or closed"):
        load_image(closed)
    with pytest.raises(ImageError, match="no pixels"):
        load_image(Image.new("RGB", (0, 0)))
    result, image = MaskDetector().analyze(Image.open(bad_inputs["truncated.jpg"]))
    assert image is None and result.error and "truncated" in result.error
