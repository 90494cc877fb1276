"""Short test videos made from real face photos, with each person's true boxes known.

Kept tiny (320x240, 30 fps, a few seconds) so the video tests run in seconds.
Written under pytest's tmp dirs only: never commit frames made from the data set.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from conftest import TEST_SPLIT_FACES

from maskwatch.faces import YuNetDetector
from maskwatch.synthetic import iou
from maskwatch.video.synthetic import Walker, background, cut_face, frames, write_video

WIDTH, HEIGHT, FPS = 320, 240, 30.0
BARE_A = TEST_SPLIT_FACES["without_mask"][0]
BARE_B = TEST_SPLIT_FACES["without_mask"][1]
MASKED = TEST_SPLIT_FACES["with_mask"][0]


@dataclass
class Clip:
    path: Path
    frames: int
    walkers: list[Walker]


def detector(yunet_path: Path) -> YuNetDetector:
    return YuNetDetector(yunet_path, extra_scales=())


def three_people(folder: Path, yunet_path: Path) -> Clip:
    """90 frames (3 s). A: bare, walks along the top for 2.5 s. M: masked, enters at 0.67 s and stays.
    B: bare, appears at 1.5 s and leaves 0.83 s later. No paths cross."""
    faces = detector(yunet_path)
    a = cut_face(BARE_A, faces, 56, "without_mask")
    m = cut_face(MASKED, faces, 56, "with_mask")
    b = cut_face(BARE_B, faces, 56, "without_mask")
    walkers = [
        Walker(a, 0, 75, (5.0, 5.0), (150.0, 15.0)),
        Walker(m, 20, 90, (240.0, 150.0), (120.0, 140.0)),
        Walker(b, 45, 70, (10.0, 160.0), (40.0, 150.0)),
    ]
    return _write(folder / "three_people.avi", walkers, 90)


def one_person(folder: Path, yunet_path: Path, count: int = 30, name: str = "one_person.avi") -> Clip:
    """One bare face drifting right, visible throughout."""
    face = cut_face(BARE_A, detector(yunet_path), 56, "without_mask")
    return _write(folder / name, [Walker(face, 0, count, (40.0, 60.0), (140.0, 80.0))], count)


def _write(path: Path, walkers: list[Walker], count: int) -> Clip:
    written = write_video(path, frames(background(WIDTH, HEIGHT), walkers, count), FPS)
    assert written == count
    return Clip(path, count, walkers)


def owner(walkers: list[Walker], frame: int, box: list[float]) -> int | None:
    """Index of the walker whose true box at ``frame`` the reported ``box`` matches, if any."""
    for i, walker in enumerate(walkers):
        truth = walker.box(frame)
        if truth is not None and iou(truth, box) >= 0.3:
            return i
    return None


def corrupt_frame(avi: Path, index: int, out: Path) -> None:
    """Copy an MJPG .avi with frame ``index``'s JPEG data wiped, so that frame cannot be decoded."""
    data = bytearray(avi.read_bytes())
    position = data.index(b"movi") + 4
    seen = 0
    while position + 8 <= len(data):
        chunk, size = bytes(data[position:position + 4]), struct.unpack("<I", data[position + 4:position + 8])[0]
        if chunk == b"00dc":
            if seen == index:
                data[position + 8:position + 8 + size] = bytes(size)
                out.write_bytes(data)
                return
            seen += 1
        position += 8 + size + (size & 1)
    raise ValueError(f"{avi} has no frame {index}")
