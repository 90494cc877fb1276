"""``maskwatch evaluate --scenes DIR``: face recall, label accuracy and AP@0.5 on scenes with VOC annotations.

Ground truth is PASCAL VOC XML, the format of the public face-mask scene sets: one file per image,
``<object><name>with_mask</name><bndbox><xmin>..`` per face, either beside the images or in an
``annotations/`` folder next to an ``images/`` folder.

Matching follows COCO's greedy rule at IoU >= 0.5: detections, best score first, take the
unmatched counted face they overlap most; failing that, a detection on an ignored face
(smaller than ``--min-face``, marked ``difficult``, or of a class mapped to nothing) is
ignored rather than called false, and so is an unmatched detection smaller than ``--min-face``.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maskwatch.evaluation.common import face_probabilities, fmt, map_label, markdown_table, predict
from maskwatch.images import ImageError, load_image
from maskwatch.pipeline import MaskDetector
from maskwatch.synthetic import iou
from maskwatch.training.data import IMAGE_SUFFIXES
from maskwatch.training.metrics import average_precision

IOU_THRESHOLD = 0.5


@dataclass
class GroundTruth:
    box: tuple[float, float, float, float]
    name: str  # the class as annotated
    label: str | None  # the model label it counts as; None when ignored
    ignored: str = ""  # why: "small", "difficult", "class <name>"


@dataclass
class Scene:
    image: Path
    annotation: Path
    objects: list[GroundTruth] = field(default_factory=list)


@dataclass
class Detection:
    box: tuple[float, float, float, float]
    score: float
    probabilities: np.ndarray
    label: str
    match: int | None = None  # index of the matched counted object
    ignored: bool = False


def read_voc(path: Path) -> tuple[str, list[tuple[str, tuple[float, float, float, float], bool]]]:
    """The image file name and (class, box, difficult) objects of one VOC XML file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not a readable VOC XML file ({exc})") from None
    objects = []
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            continue
        box = tuple(float(bndbox.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax"))
        if not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"{path}: bad box {box}")
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append(((obj.findtext("name") or "").strip(), box, difficult))
    return (root.findtext("filename") or "").strip(), objects


def find_scenes(root: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, annotation) pairs under ``root``, and the annotation files whose image was not found."""
    pairs, lost = [], []
    for xml in sorted(root.rglob("*.xml")):
        filename, _ = read_voc(xml)
        image = _image_for(xml, filename)
        if image is None:
            lost.append(str(xml.relative_to(root)))
        else:
            pairs.append((image, xml))
    return pairs, lost


def _image_for(xml: Path, filename: str) -> Path | None:
    """The image an annotation describes: its <filename>, else the same stem, beside it or in ../images/."""
    folders = [xml.parent, xml.parent.parent / "images"]
    for folder in folders:
        if filename and (folder / filename).is_file():
            return folder / filename
        for suffix in sorted(IMAGE_SUFFIXES):
            for candidate in (folder / (xml.stem + suffix), folder / (xml.stem + suffix.upper())):
                if candidate.is_file():
                    return candidate
    return None


def load_scene(image: Path, xml: Path, labels: Sequence[str], mapping: dict[str, str], min_face: float) -> Scene:
    scene = Scene(image, xml)
    for name, box, difficult in read_voc(xml)[1]:
        label = map_label(name, mapping, labels)
        why = ("difficult" if difficult else f"class {name}" if label is None
               else "small" if box[3] - box[1] < min_face else "")
        scene.objects.append(GroundTruth(box, name, label, why))
    return scene


def counted(gt: GroundTruth) -> bool:
    return not gt.ignored


def match(objects: list[GroundTruth], boxes: Sequence[Sequence[float]], scores: Sequence[float], min_face: float,
          counts: Callable[[GroundTruth], bool] = counted) -> tuple[list[int | None], list[bool]]:
    """Greedy COCO matching: (matched object index or None, ignored?) for each detection, in input order."""
    matched: set[int] = set()
    result: list[int | None] = [None] * len(boxes)
    ignored = [False] * len(boxes)
    for d in np.argsort(-np.asarray(scores, float), kind="stable"):
        overlaps = [iou(boxes[d], gt.box) for gt in objects]
        free = [i for i, gt in enumerate(objects) if counts(gt) and i not in matched
                and overlaps[i] >= IOU_THRESHOLD]
        if free:
            best = max(free, key=lambda i: overlaps[i])
            result[d] = best
            matched.add(best)
            continue
        # COCO: a detection on an ignored face, or too small to be counted itself, is neither right nor wrong.
        on_ignored = any(gt.ignored and overlaps[i] >= IOU_THRESHOLD for i, gt in enumerate(objects))
        ignored[d] = on_ignored or boxes[d][3] - boxes[d][1] < min_face
    return result, ignored


@dataclass
class Tally:
    """Running counts over all scenes."""

    labels: list[str]
    faces: Counter = field(default_factory=Counter)  # counted faces per label
    found: Counter = field(default_factory=Counter)  # of those, matched by a detection
    right: Counter = field(default_factory=Counter)  # of those, given the right label
    ignored_objects: Counter = field(default_factory=Counter)  # by reason
    detections: int = 0
    false_faces: int = 0
    ignored_detections: int = 0
    ap_scores: dict[str, list[float]] = field(default_factory=dict)
    ap_hits: dict[str, list[bool]] = field(default_factory=dict)


def detect(detector: MaskDetector, image: np.ndarray) -> list[Detection]:
    """Every face the pipeline finds, with all class probabilities and the pipeline's label."""
    faces = detector.faces.detect(image)
    labels = detector.classifier.labels
    probabilities = face_probabilities(detector.classifier, image, faces)
    predicted = predict(probabilities, labels, detector.mask_threshold)
    return [Detection(tuple(float(v) for v in face.box), float(face.score), p, labels[k])
            for face, p, k in zip(faces, probabilities, predicted, strict=True)]


def score_scene(scene: Scene, detections: list[Detection], min_face: float, tally: Tally) -> dict:
    """Add one scene to ``tally``; returns its own summary."""
    objects = scene.objects
    boxes = [d.box for d in detections]
    matches, ignored = match(objects, boxes, [d.score for d in detections], min_face)
    for gt in objects:
        if gt.ignored:
            tally.ignored_objects[gt.ignored] += 1
        else:
            tally.faces[gt.label] += 1
    for d, m, skip in zip(detections, matches, ignored, strict=True):
        d.match, d.ignored = m, skip
        if m is not None:
            tally.found[objects[m].label] += 1
            tally.right[objects[m].label] += d.label == objects[m].label
    false_faces = sum(m is None and not skip for m, skip in zip(matches, ignored, strict=True))
    tally.detections += len(detections)
    tally.false_faces += false_faces
    tally.ignored_detections += sum(ignored)
    # AP per class: every detection is a candidate for every class, ranked by face score x P(class).
    for k, label in enumerate(tally.labels):
        scores = [d.score * float(d.probabilities[k]) for d in detections]
        hits, skip = match(objects, boxes, scores, min_face, lambda gt, label=label: counted(gt) and gt.label == label)
        kept = [i for i in range(len(detections)) if not skip[i]]
        tally.ap_scores.setdefault(label, []).extend(scores[i] for i in kept)
        tally.ap_hits.setdefault(label, []).extend(hits[i] is not None for i in kept)
    return {"faces": sum(counted(gt) for gt in objects), "found": sum(m is not None for m in matches),
            "right": sum(d.match is not None and d.label == objects[d.match].label for d in detections),
            "false_faces": false_faces, "ignored_objects": sum(bool(gt.ignored) for gt in objects)}


def evaluate_scenes(root: str | Path, detector: MaskDetector, mapping: dict[str, str], min_face: float = 0.0,
                    progress: bool = False) -> dict:
    root = Path(root)
    labels = detector.classifier.labels
    pairs, lost = find_scenes(root)
    if not pairs:
        raise ValueError(f"no VOC annotation (.xml) files with their images under {root}")
    tally = Tally(labels)
    per_image, unreadable = [], []
    for image_path, xml in tqdm(pairs, desc="scenes", unit="img", disable=not progress, file=sys.stderr):
        scene = load_scene(image_path, xml, labels, mapping, min_face)
        try:
            image = load_image(image_path, detector.max_pixels)
        except ImageError as exc:
            unreadable.append(f"{image_path.relative_to(root)}: {exc}")
            continue
        summary = score_scene(scene, detect(detector, image), min_face, tally)
        per_image.append({"file": image_path.relative_to(root).as_posix(), **summary})
    return _scene_result(tally, root, mapping, min_face, per_image, lost, unreadable)


def _scene_result(tally: Tally, root: Path, mapping: dict[str, str], min_face: float, per_image: list[dict],
                  lost: list[str], unreadable: list[str]) -> dict:
    per_class = {}
    for label in tally.labels:
        faces, found, right = tally.faces[label], tally.found[label], tally.right[label]
        per_class[label] = {
            "faces": faces, "found": found, "recall": found / faces if faces else None,
            "label_accuracy": right / found if found else None,
            "ap50": average_precision(tally.ap_scores.get(label, []), tally.ap_hits.get(label, []), faces),
        }
    faces, found, right = (sum(c.values()) for c in (tally.faces, tally.found, tally.right))
    aps = [c["ap50"] for c in per_class.values() if c["ap50"] is not None]
    return {
        "data": str(root), "labels": tally.labels, "images": len(per_image), "min_face": min_face,
        "label_map": mapping, "iou_threshold": IOU_THRESHOLD,
        "ap_ranking": "face score x P(class); every detection is a candidate for every class",
        "per_class": per_class,
        "all": {"faces": faces, "found": found, "recall": found / faces if faces else None,
                "label_accuracy": right / found if found else None,
                "map50": float(np.mean(aps)) if aps else None},
        "detections": tally.detections, "false_faces": tally.false_faces,
        "ignored_detections": tally.ignored_detections, "ignored_objects": dict(tally.ignored_objects),
        "annotations_without_image": lost, "unreadable": unreadable, "per_image": per_image,
    }


def scenes_markdown(result: dict) -> str:
    rows = [[label, c["faces"], c["found"], c["recall"], c["label_accuracy"], c["ap50"]]
            for label, c in result["per_class"].items()]
    total = result["all"]
    rows.append(["all", total["faces"], total["found"], total["recall"], total["label_accuracy"],
                 f"mAP {fmt(total['map50'])}"])
    ignored = ", ".join(f"{why}: {n}" for why, n in sorted(result["ignored_objects"].items())) or "none"
    mapped = ", ".join(f"{name} -> {target}" for name, target in sorted(result["label_map"].items()))
    notes = [
        f"{result['images']} annotated images in `{result['data']}`; a face is found when a detection overlaps it "
        f"with IoU >= {result['iou_threshold']}. AP@0.5 is all-point interpolated, detections ranked by "
        "face score x class probability.",
        f"Ignored ground truth (neither missed nor making its detections false): {ignored}; "
        f"--min-face {result['min_face']:g} px (box height). Class map: {mapped or 'none'}.",
        f"Detections {result['detections']}: false faces {result['false_faces']}, "
        f"ignored {result['ignored_detections']}.",
    ]
    if result["annotations_without_image"] or result["unreadable"]:
        notes.append(f"Skipped: {len(result['annotations_without_image'])} annotation files without an image, "
                     f"{len(result['unreadable'])} unreadable images.")
    table = markdown_table(["class", "faces", "found", "recall", "label accuracy", "AP@0.5"], rows)
    return "\n\n".join([table, *notes]) + "\n"
