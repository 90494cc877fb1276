"""Decode any image a user may hand us into one shape: an upright BGR uint8 array.

Pillow does the decoding because it reads the header before the pixels (so a
20000x20000 bomb is refused before it costs memory), understands EXIF
orientation, and handles CMYK, 16-bit, palette and alpha images that would
otherwise need special cases.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 40 megapixels: a 48 MP phone photo is refused, a 24 MP DSLR frame is fine.
# Users with bigger frames can raise it (MaskDetector(max_pixels=...), --max-pixels).
DEFAULT_MAX_PIXELS = 40_000_000
# The file endings taken as images wherever a folder is searched (detect, training, evaluation).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic"})

# A file is refused from its size, before it is read, when it is larger than any image of ``max_pixels`` could
# be: 8 bytes a pixel (16-bit RGBA, uncompressed) plus 16 MB of metadata, i.e. 336 MB at the default 40 MP.
# Without this a 2 GiB file was read whole into memory before the decoder refused it.
FILE_BYTES_PER_PIXEL = 8
FILE_METADATA_BYTES = 16 * 1024 * 1024

ImageInput = np.ndarray | bytes | bytearray | memoryview | str | os.PathLike | Image.Image


class ImageError(ValueError):
    """An input that cannot be turned into an image; the message says why."""


class PixelLimitError(ImageError):
    """An image with more pixels than ``max_pixels``: refused from its header, before decoding."""


@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture and what the caller may want to tell about it."""

    image: np.ndarray  # upright BGR uint8
    frames: int = 1  # frames or pages in the file; only the first is decoded (animated GIF/WebP, TIFF pages)


def max_file_bytes(max_pixels: int) -> int:
    """The largest file that can hold an image of ``max_pixels`` (see FILE_BYTES_PER_PIXEL)."""
    return FILE_BYTES_PER_PIXEL * max_pixels + FILE_METADATA_BYTES


EMPTY_PATH_ERROR = "empty path: '' names no file (an unset shell variable?)"


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A decoded array as the BGR uint8 (H, W, 3) array the models take: the same array when it is one
    already (no copy), else converted as ``load_image`` converts arrays; ImageError for anything else."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a decoded image array, got a {type(image).__name__}: detect() and "
                         "analyze() read paths, bytes and Pillow images")
    return _array_to_bgr(image)


def load_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return ``source`` as an upright BGR uint8 array of shape (H, W, 3).

    ``source`` is a path, the encoded bytes of a file, an array that is already decoded (BGR, BGRA or
    grayscale, as OpenCV gives them), or a Pillow image (its EXIF orientation applied). Anything else, a URL
    included (nothing is downloaded), is an ImageError.
    """
    return read_image(source, max_pixels).image


def read_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """``load_image``, with the number of frames the file holds (only the first is decoded)."""
    if isinstance(source, np.ndarray):
        return DecodedImage(_array_to_bgr(source))
    if isinstance(source, Image.Image):
        width, height = source.size
        if width * height > max_pixels:
            raise pixel_limit_error(width * height, max_pixels)
        if width < 1 or height < 1:
            raise ImageError(f"image has no pixels ({width}x{height})")
        try:  # a Pillow image is decoded lazily: a truncated file or a closed image fails only now
            return DecodedImage(_pil_to_bgr(_upright(source)))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"corrupt, truncated or closed Pillow image: {exc}") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        if isinstance(source, str) and (problem := url_problem(source)):
            raise ImageError(problem)
        if isinstance(source, str) and not source:  # Path("") is the current folder
            raise ImageError(EMPTY_PATH_ERROR)
        data = read_file(Path(source), max_file_bytes(max_pixels))
    else:
        raise ImageError(f"cannot read a {type(source).__name__}: give a path, the file's bytes, a numpy "
                         "array or a Pillow image")
    return decode_image_frames(data, max_pixels=max_pixels)


def url_problem(text: str) -> str | None:
    """The error for a URL given where a file is wanted (nothing is downloaded), or None. A one-letter
    scheme is a Windows drive, not a URL."""
    parts = urlsplit(text)
    if len(parts.scheme) > 1 and parts.netloc:
        return f"a URL is not read (nothing is downloaded): save the image and give its path: {text}"
    return None


def read_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else is an ImageError, never a hang.

    Opened non-blocking and checked on the open descriptor: a FIFO named ``.jpg`` would otherwise block
    the whole batch until someone writes to it, and a device or socket is no picture either.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"is a directory, not an image: {path}") from None
    except ValueError:  # os.open refuses a NUL character in a path
        raise ImageError(f"the path holds a NUL character: {str(path)!r}") from None
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"is a directory, not an image: {path}")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"not a regular file (a FIFO, device or socket): {path}")
        if info.st_size > max_bytes:
            raise ImageError(f"file is {info.st_size:,} bytes, more than any image within the pixel limit needs "
                             f"({max_bytes:,}); refused before reading")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size)):  # bounded even if the file grows
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise ImageError(f"file grew past {max_bytes:,} bytes while it was read; refused")
        return b"".join(chunks)
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def image_pixels(data: bytes) -> int:
    """Width x height from the header alone (nothing is decoded); 0 when the header cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Exception:  # noqa: BLE001 - whatever is wrong with it, decoding will say so properly
        return 0
    return width * height


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, WebP, BMP, TIFF, GIF...) to upright BGR."""
    return decode_image_frames(data, max_pixels).image


def decode_image_frames(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """``decode_image`` with the file's frame count. A multi-frame file (animated GIF, WebP or PNG, a TIFF
    with pages) is judged on its first frame, the one a viewer shows first."""
    if not data:
        raise ImageError("empty file")
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # let our own limit, checked below, be the one that counts
    try:
        with warnings.catch_warnings():
            # Pillow warns (and at 2x errors) about decompression bombs; we apply our own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise pixel_limit_error(width * height, max_pixels)
            if width < 1 or height < 1:
                raise ImageError(f"image has no pixels ({width}x{height})")
            frames = max(1, int(getattr(image, "n_frames", 1) or 1))
            if frames > 1:
                image.seek(0)  # counting the frames may have moved the file to the last one
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image, or a format that cannot be read") from None
    except Image.DecompressionBombError as exc:  # Pillow's own limit (twice ours or more) struck first
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise pixel_limit_error(int(pixels.group(1)) if pixels else None, max_pixels) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError / SyntaxError.
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    return DecodedImage(_pil_to_bgr(_upright(image)), frames)


def pixel_limit_error(pixels: int | None, max_pixels: int) -> PixelLimitError:
    """One message whichever limit struck first, ours or Pillow's (which says only the pixel count, and
    strikes or not depending on the largest limit used before in the process)."""
    size = f"image is {pixels:,} pixels, over" if pixels is not None else "image is over"
    return PixelLimitError(f"{size} the limit of {max_pixels:,} pixels")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, as phone photos need; a broken tag is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not lose the picture
        return image


def _pil_to_bgr(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping at 255.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "F":
        gray = _float_to_uint8(np.asarray(image, dtype=np.float64))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Composite transparent pixels onto white, as viewers show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _array_to_bgr(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        raise ImageError("empty array")
    if array.dtype != np.uint8:
        if array.dtype == np.uint16:
            array = (array >> 8).astype(np.uint8)
        elif np.issubdtype(array.dtype, np.floating):
            array = _float_to_uint8(array)
        else:
            raise ImageError(f"unsupported array dtype {array.dtype}")
    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[:, :, None], 3, axis=2))
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, :3])
    if array.ndim == 3 and array.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    raise ImageError(f"unsupported array shape {array.shape}")


# A float image whose largest value is at most this is on the 0..1 scale (scikit-image's and Pillow's "F"
# convention), else on 0..255: resampling (a cubic resize) overshoots 1.0 a little, and a 0..255 image this
# dark is black anyway.
FLOAT_UNIT_SCALE_MAX = 2.0


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """A float image as uint8: 0..1 or 0..255 by its largest value (FLOAT_UNIT_SCALE_MAX), clipped."""
    if not np.isfinite(values).all():
        raise ImageError("the image holds NaN or infinite values")
    scale = 255.0 if values.max() <= FLOAT_UNIT_SCALE_MAX else 1.0
    return np.clip(values * scale, 0, 255).astype(np.uint8)
