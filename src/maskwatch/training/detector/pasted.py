"""Portrait faces pasted into detector training views, at the sizes crowds show them.

The real scene sets hold few small masked faces; a class-per-folder set such as ``face-mask`` holds thousands
of masked and bare portraits. Each pasted face comes from that set's *train* split as the training command and
the scene benchmark split it (one face per photo found by the stock YuNet, near-duplicates grouped, seed 0), so
the benchmark's test faces are never learnt. Its box is the stock model's box around that face.

A face is pasted with some head around it and a feathered edge (``maskwatch.synthetic``), at 10-80 px high
(log-uniform), where it does not touch an annotated face, before the view's colour, blur and JPEG changes, so
it is degraded with the rest of the photo.

Decoys, as an option: patches of the view's own face-free background, cut, feathered and pasted the same way
but not boxed, so that a pasted patch's edge is not itself a sign of a face (measured: without them, more false
faces on face-free photos; the face detector's card).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskwatch.crops import face_in_crop
from maskwatch.faces.yunet import YuNetDetector
from maskwatch.model_files import cache_dir
from maskwatch.synthetic import face_patch, free_spot, paste
from maskwatch.training.data import Sample
from maskwatch.training.detector.data import MIN_TRAIN_FACE, View
from maskwatch.training.face_cache import CACHE_CROP_SIZE, FaceCropCache, found_face, split_portraits

# Height of a pasted face in the view, px: log-uniform in this range (the small faces crowds show).
PASTE_HEIGHTS = (10.0, 80.0)
# A view that gets pasted faces gets 1 to this many.
MAX_PASTED = 4
# Training views that get pasted faces (when a set to paste from is given).
DEFAULT_PASTE_PROBABILITY = 0.5


@dataclass(frozen=True)
class PortraitFace:
    crop: np.ndarray  # the cached square crop around the face (CACHE_CROP_SIZE px, BGR)
    box: np.ndarray  # the face's box inside the crop: x1 y1 x2 y2
    label: str


def _face_box_in_crop(record_box: Sequence[float], margin: float) -> np.ndarray:
    """Where ``face_crop`` put the face: centred, the longer side of the box filling 1 / (1 + 2 margin)."""
    x1, y1, x2, y2 = record_box
    offset, side = face_in_crop(CACHE_CROP_SIZE, margin)
    scale = side / max(x2 - x1, y2 - y1, 1.0)
    centre = offset + side / 2
    half_w, half_h = (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
    return np.array([centre - half_w, centre - half_h, centre + half_w, centre + half_h], np.float32)


def portrait_faces(root: str | Path, base_model: str | Path, split: str = "train",
                   cache_folder: Path | None = None) -> list[PortraitFace]:
    """The faces of ``split`` in a class-per-folder set, found by ``base_model`` (one pass); photos where it
    finds no face are left out."""
    detector = YuNetDetector(base_model, extra_scales=())
    samples, cache = split_portraits(root, detector, cache_folder or cache_dir() / "train")
    chosen: list[Sample] = [s for s in samples if s.split == split and found_face(cache, s)]
    return [_portrait(cache, s) for s in chosen]


def _portrait(cache: FaceCropCache, sample: Sample) -> PortraitFace:
    record_box = cache.records[sample.sha256].used_box
    assert record_box is not None
    return PortraitFace(cache.load(sample.sha256), _face_box_in_crop(record_box, cache.margin), sample.label)


def paste_faces(view: View, faces: Sequence[PortraitFace], rng: np.random.Generator, decoys: int = 0) -> View:
    """``view`` with 1 to MAX_PASTED faces pasted where they touch no annotated (or ignored) face, and up to
    ``decoys`` face-free patches of the view pasted the same way (not boxed)."""
    image = view.image.copy()
    size_h, size_w = image.shape[:2]
    taken = [*view.faces, *view.ignore]
    added = []
    for _ in range(int(rng.integers(1, MAX_PASTED + 1))):
        face = faces[int(rng.integers(len(faces)))]
        height = round(float(np.exp(rng.uniform(*np.log(PASTE_HEIGHTS)))))
        crop, box = face.crop, face.box
        if rng.random() < 0.5:
            crop = np.ascontiguousarray(crop[:, ::-1])
            box = np.array([crop.shape[1] - box[2], box[1], crop.shape[1] - box[0], box[3]], np.float32)
        patch, alpha, face_box = face_patch(crop, box.tolist(), height)
        spot = free_spot(taken, patch.shape[1], patch.shape[0], size_w, size_h, rng)
        if spot is None:
            continue
        paste(image, patch, alpha, *spot)
        placed = face_box + np.array([spot[0], spot[1], spot[0], spot[1]], np.float32)
        taken.append(placed)
        if placed[3] - placed[1] >= MIN_TRAIN_FACE:
            added.append(placed)
    for _ in range(int(rng.integers(0, decoys + 1))):
        _paste_decoy(image, view.image, taken, rng)
    faces_out = np.concatenate([view.faces.reshape(-1, 4), np.array(added, np.float32).reshape(-1, 4)])
    return View(image, faces_out.astype(np.float32), view.ignore)


def _paste_decoy(image: np.ndarray, source: np.ndarray, taken: list[np.ndarray], rng: np.random.Generator) -> None:
    """Cut a patch of ``source`` that touches no ``taken`` box (so holds no face), and paste it into ``image``
    with a pasted face's size and feathered edge, also touching no ``taken`` box; adds it to ``taken``."""
    size_h, size_w = source.shape[:2]
    height = round(float(np.exp(rng.uniform(*np.log(PASTE_HEIGHTS)))))
    side = int(rng.integers(max(2, height // 2), 2 * height + 1))  # the region cut, before the resize
    region = free_spot(taken, int(side * 1.7) + 1, int(side * 1.7) + 1, size_w, size_h, rng)  # with face_patch's pad
    if region is None:
        return
    x, y = region[0] + int(0.35 * side), region[1] + int(0.35 * side)
    patch, alpha, _ = face_patch(source, [x, y, x + side, y + side], height)
    spot = free_spot(taken, patch.shape[1], patch.shape[0], size_w, size_h, rng)
    if spot is None:
        return
    paste(image, patch, alpha, *spot)
    taken.append(np.array([spot[0], spot[1], spot[0] + patch.shape[1], spot[1] + patch.shape[0]], np.float32))
