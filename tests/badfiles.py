"""Make the awkward files users really send: every one must give a result or a clear error."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_bad_inputs(folder: Path, face_photo: Path) -> dict[str, Path]:
    """Write one file per kind of awkward input, made from a real face photo where a picture is needed."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(face_photo).convert("RGB")
    files: dict[str, Path] = {}

    def add(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)

    def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    jpeg = encode(photo, "JPEG", quality=92)
    add("empty.jpg", b"")
    add("truncated.jpg", jpeg[: len(jpeg) // 3])
    add("corrupt.jpg", jpeg[:200] + bytes(range(256)) * 40)
    add("not_an_image.jpg", b"%PDF-1.4\nthis is a document, not a picture\n" * 20)
    add("one_pixel.png", encode(Image.new("RGB", (1, 1), (128, 128, 128)), "PNG"))
    # 20000x20000 one-bit image: a tiny file that would decode to 400 megapixels.
    add("huge.png", encode(Image.new("1", (20000, 20000)), "PNG", optimize=True))
    add("gray.jpg", encode(photo.convert("L"), "JPEG"))
    rgba = photo.convert("RGBA")
    rgba.putalpha(200)
    add("rgba.png", encode(rgba, "PNG"))
    gray16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    add("gray16.png", encode(Image.fromarray(gray16), "PNG"))
    add("cmyk.jpg", encode(photo.convert("CMYK"), "JPEG"))
    add("photo.webp", encode(photo, "WEBP", quality=90))
    # A phone photo: pixels stored sideways, EXIF orientation 6 says "rotate 90 degrees clockwise to view".
    exif = Image.Exif()
    exif[0x0112] = 6
    add("rotated_exif.jpg", encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif))
    add("name with spaces ünïcode.jpg", jpeg)
    return files


BAD = {"empty.jpg", "truncated.jpg", "corrupt.jpg", "not_an_image.jpg", "huge.png"}
