"""Face boxes for detector training: VOC scene sets (every class is "face"), and the views the net learns from.

A training view is a square crop of one photo rescaled around the scale the pipeline would detect it at
(``maskwatch.faces.passes.detection_scale``) and mostly below it, so that faces of 10-40 px are common; a quarter of the
views are mosaics of four smaller photos (crowds of small faces). Then flips, colour, blur and JPEG.
Faces cut by the crop edge (less than half left), and faces under ``MIN_TRAIN_FACE`` px, are *ignored*: no
loss either way on the priors inside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskwatch.faces.passes import detection_scale
from maskwatch.voc import find_scenes, manifest_sources, read_voc

# Faces lower than this (px, in the view) are ignored, not learnt: below YuNet's smallest prior.
MIN_TRAIN_FACE = 8.0
# A face cut by the crop counts when at least this fraction of it is left; less is ignored.
MIN_VISIBLE = 0.5
# Views are rescaled by 2**u of the detection scale, u uniform in this range: as large as at detection and up
# to half of it (mosaics go smaller still).
SCALE_RANGE_LOG2 = (-1.0, 0.5)
MOSAIC_PROBABILITY = 0.25
PAD_VALUE = 114
CROP_SIZE = 480  # a multiple of 32, as the net's strides need


@dataclass
class DetectorSample:
    image: Path
    boxes: np.ndarray  # (F, 4) x1 y1 x2 y2 in pixels of the stored image
    names: list[str]  # the annotated class of each box
    split: str
    source: str = ""  # who annotated it (the manifest's source_repo): each source has its own box style


def scan_scene_boxes(root: str | Path, split: str) -> list[DetectorSample]:
    """Every annotated image of ``split`` (the set's manifest) with all its boxes; difficult ones included."""
    root = Path(root)
    pairs, _ = find_scenes(root, split)
    sources = manifest_sources(root)
    samples = []
    for image, xml in pairs:
        objects = read_voc(xml)[1]
        boxes = np.array([box for _, box, _ in objects], np.float32).reshape(-1, 4)
        source = sources.get(xml.relative_to(root).as_posix(), "")
        samples.append(DetectorSample(image, boxes, [name for name, _, _ in objects], split,
                                      f"{root.name}:{source}" if source else root.name))
    return samples


@dataclass
class View:
    image: np.ndarray  # (S, S, 3) uint8 BGR
    faces: np.ndarray  # (F, 4)
    ignore: np.ndarray  # (G, 4)


def _place(image: np.ndarray, boxes: np.ndarray, scale: float, width: int, height: int,
           rng: np.random.Generator) -> View:
    """Rescale by ``scale`` and cut (or pad) a random width x height window; split boxes into faces and ignore."""
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    # Window origin in the resized image (negative: the image sits inside a padded canvas).
    x0 = int(rng.integers(min(0, size[0] - width), max(0, size[0] - width) + 1))
    y0 = int(rng.integers(min(0, size[1] - height), max(0, size[1] - height) + 1))
    canvas = np.full((height, width, 3), PAD_VALUE, np.uint8)
    sx1, sy1 = max(0, x0), max(0, y0)
    sx2, sy2 = min(size[0], x0 + width), min(size[1], y0 + height)
    canvas[sy1 - y0:sy2 - y0, sx1 - x0:sx2 - x0] = resized[sy1:sy2, sx1:sx2]
    moved = boxes * scale - np.array([x0, y0, x0, y0], np.float32)
    clipped = np.clip(moved, 0, [width, height, width, height]).astype(np.float32)
    area = np.prod(np.clip(moved[:, 2:] - moved[:, :2], 0, None), axis=1)
    visible = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
    seen = visible > 0
    keep = seen & (visible >= MIN_VISIBLE * np.maximum(area, 1e-6)) & (clipped[:, 3] - clipped[:, 1] >= MIN_TRAIN_FACE)
    return View(canvas, clipped[keep], clipped[seen & ~keep])


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour, greyscale, blur and JPEG, each at random, as cameras and crowds vary them."""
    out = image.astype(np.float32)
    out = out * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)  # contrast, brightness
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8)) % 180
        hsv[..., 1] *= rng.uniform(0.5, 1.5)
        out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    if rng.random() < 0.1:
        out = np.repeat(cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)[..., None], 3, 2)
    image = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            image = decoded
    return image


def read_sample(sample: DetectorSample) -> np.ndarray:
    image = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read {sample.image}")
    return image


# Something that adds to a view before its colour, blur and JPEG changes (e.g. pasted faces: pasted.py).
ViewStep = Callable[[View, np.random.Generator], View]


def training_view(samples: list[DetectorSample], index: int, rng: np.random.Generator,
                  size: int = CROP_SIZE, add: ViewStep | None = None) -> View:
    """One augmented square view of sample ``index`` (or a mosaic of it and three others); ``add`` changes the
    placed view before flips, colour, blur and JPEG."""
    if rng.random() < MOSAIC_PROBABILITY:
        view = _mosaic(samples, index, rng, size)
    else:
        sample = samples[index]
        image = read_sample(sample)
        scale = detection_scale(image.shape[1], image.shape[0]) * 2 ** rng.uniform(*SCALE_RANGE_LOG2)
        view = _place(image, sample.boxes, scale, size, size, rng)
    if add is not None:
        view = add(view, rng)
    return _finish(view, rng)


def _mosaic(samples: list[DetectorSample], index: int, rng: np.random.Generator, size: int) -> View:
    cx, cy = (int(rng.uniform(0.3, 0.7) * size) for _ in range(2))
    cells = [(0, 0, cx, cy), (cx, 0, size, cy), (0, cy, cx, size), (cx, cy, size, size)]
    picks = [index, *rng.integers(0, len(samples), 3)]
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    faces, ignore = [], []
    for (x1, y1, x2, y2), pick in zip(cells, picks, strict=True):
        sample = samples[int(pick)]
        image = read_sample(sample)
        fit = min((x2 - x1) / image.shape[1], (y2 - y1) / image.shape[0])
        scale = max(fit, detection_scale(image.shape[1], image.shape[0]) * 2 ** rng.uniform(-1.5, -0.5))
        part = _place(image, sample.boxes, scale, x2 - x1, y2 - y1, rng)
        canvas[y1:y2, x1:x2] = part.image
        shift = np.array([x1, y1, x1, y1], np.float32)
        faces.append(part.faces + shift)
        ignore.append(part.ignore + shift)
    return View(canvas, np.concatenate(faces), np.concatenate(ignore))


def _finish(view: View, rng: np.random.Generator) -> View:
    image, faces, ignore = view.image, view.faces, view.ignore
    if rng.random() < 0.5:
        width = image.shape[1]
        image = np.ascontiguousarray(image[:, ::-1])
        faces = faces[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [width, 0, width, 0]
        ignore = ignore[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [width, 0, width, 0]
    return View(_photometric(image, rng), faces.astype(np.float32), ignore.astype(np.float32))


def validation_view(sample: DetectorSample) -> View:
    """The photo at its detection scale, padded right and down to a multiple of 32; faces under
    MIN_TRAIN_FACE are ignored, as in training."""
    image = read_sample(sample)
    scale = detection_scale(image.shape[1], image.shape[0])
    width = -(-round(image.shape[1] * scale) // 32) * 32
    height = -(-round(image.shape[0] * scale) // 32) * 32
    placed = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                        interpolation=cv2.INTER_LINEAR)
    canvas = np.full((height, width, 3), PAD_VALUE, np.uint8)
    canvas[:placed.shape[0], :placed.shape[1]] = placed
    boxes = sample.boxes * scale
    small = boxes[:, 3] - boxes[:, 1] < MIN_TRAIN_FACE
    return View(canvas, boxes[~small].astype(np.float32), boxes[small].astype(np.float32))
