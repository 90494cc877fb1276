"""How much of a face detector's missed recall is box style: the ceiling that the scene set's boxes allow.

    python benchmarks/box_style_ceiling.py ../shared/datasets/mask-scenes [--face-model FILE] [--threshold 0.5]

`mask-scenes` joins three sources whose annotators drew face boxes differently (one source's boxes are about
1.2x another's, and within a source the style changes from photo to photo). A face counts as found when a
detection overlaps its box with IoU >= 0.5, so a detector that finds the face but draws the box in another
style misses it. For faces of 24 px and up on the val split, this prints per class:

- ``as detected``: recall at IoU >= 0.5 (each face against its best-overlapping detection, so a little
  above the evaluation's one-to-one matching);
- ``per-source oracle``: the same after every detection's box is moved by the one (width scale, height
  scale, vertical shift) that finds the most faces of its photo's source, fitted on these very faces. No
  detector can know a photo's source, so this is an upper bound for any single box style the model learns;
- ``per-source-and-class oracle``: one such move for each source and class (e.g. one for the masked faces
  of one source), each fitted on its own faces: a bound even for a detector that draws a masked face's box
  in another style than a bare face's;
- ``found at IoU >= 0.3``: a detection lies on the face, in whatever style.

The gap between the last two is what a detector could only win by guessing each annotator's style.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from maskwatch.evaluation.common import fmt, markdown_table
from maskwatch.faces.yunet import YuNetDetector
from maskwatch.images import load_image
from maskwatch.voc import find_scenes, manifest_sources, read_voc

CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")
MIN_FACE = 24.0
SCALES = np.round(np.arange(0.8, 1.351, 0.05), 2)
SHIFTS = (-0.1, -0.05, 0.0, 0.05, 0.1)  # of the box height; positive moves the box down


def overlaps(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each row of ``boxes`` (x1, y1, x2, y2)."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + areas - inter)


def restyle(boxes: np.ndarray, width_scale: float, height_scale: float, shift: float) -> np.ndarray:
    """Boxes scaled about their centres and moved down by ``shift`` of their height."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cy = cy + shift * h
    return np.stack([cx - w * width_scale / 2, cy - h * height_scale / 2,
                     cx + w * width_scale / 2, cy + h * height_scale / 2], axis=1)


Photo = tuple[str, list[tuple[str, np.ndarray]], np.ndarray]  # source, faces (class, box), detections


def found(photos: list[Photo], style: tuple[float, float, float], iou: float) -> dict[str, list[int]]:
    """{class: [found, faces]} with every detection restyled."""
    counts = {name: [0, 0] for name in CLASSES}
    for _, faces, detections in photos:
        moved = restyle(detections, *style) if len(detections) else detections
        for name, box in faces:
            counts[name][1] += 1
            counts[name][0] += bool(len(moved)) and float(overlaps(box, moved).max()) >= iou
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenes")
    parser.add_argument("--split", default="val")
    parser.add_argument("--face-model", default=None, help="a face model file (default: the shipped one)")
    parser.add_argument("--threshold", type=float, default=None, help="face score threshold (default: the model's)")
    args = parser.parse_args()
    root = Path(args.scenes)
    detector = YuNetDetector(args.face_model, score_threshold=args.threshold)
    sources = manifest_sources(root)
    pairs, _ = find_scenes(root, args.split)
    photos: list[Photo] = []
    for image_path, xml in pairs:
        faces = [(name, np.array(box, float)) for name, box, difficult in read_voc(xml)[1]
                 if not difficult and box[3] - box[1] >= MIN_FACE and name in CLASSES]
        detections = np.array([f.box for f in detector.detect(load_image(image_path))], float).reshape(-1, 4)
        photos.append((sources.get(xml.relative_to(root).as_posix(), ""), faces, detections))
    plain = (1.0, 1.0, 0.0)
    styles = list(itertools.product(SCALES, SCALES, SHIFTS))
    rows: list[list[str]] = []
    oracle = {name: [0, 0] for name in CLASSES}
    by_class = {name: [0, 0] for name in CLASSES}
    for source in sorted({p[0] for p in photos}):
        mine = [p for p in photos if p[0] == source]
        tried = [found(mine, style, 0.5) for style in styles]
        best = max(range(len(styles)), key=lambda i: sum(hit for hit, _ in tried[i].values()))
        for name in CLASSES:
            hits, faces = tried[best][name]
            oracle[name][0] += hits
            oracle[name][1] += faces
            by_class[name][0] += max(counts[name][0] for counts in tried)
            by_class[name][1] += faces
        style = styles[best]
        rows.append([source or "(no source)", f"width x{style[0]:g}, height x{style[1]:g}, shift {style[2]:+g}",
                     *(fmt(c[0] / c[1]) if c[1] else "-" for c in (found(mine, plain, 0.5)[n] for n in CLASSES)),
                     *(fmt(c[0] / c[1]) if c[1] else "-" for c in (tried[best][n] for n in CLASSES))])
    print(f"Face model: {args.face_model or 'shipped'}, score threshold {detector.score_threshold:g}; "
          f"{args.split} faces of {MIN_FACE:g} px and up\n")
    print(markdown_table(["source", "best style (oracle)", *(f"{n} as detected" for n in CLASSES),
                          *(f"{n} oracle" for n in CLASSES)], rows))
    print()
    summary = []
    for label, counts in (("as detected, IoU >= 0.5", found(photos, plain, 0.5)),
                          ("per-source oracle, IoU >= 0.5", oracle),
                          ("per-source-and-class oracle, IoU >= 0.5", by_class),
                          ("found at IoU >= 0.3", found(photos, plain, 0.3))):
        summary.append([label, *(f"{fmt(c[0] / c[1])} ({c[0]}/{c[1]})" if c[1] else "-"
                                 for c in (counts[n] for n in CLASSES))])
    print(markdown_table(["", *CLASSES], summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
