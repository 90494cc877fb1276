"""``maskwatch evaluate --scenes DIR``: what users meet, measured on scenes with VOC face annotations.

Two views, so that detector and classifier errors are seen apart:
- the whole pipeline: face recall, label accuracy by class and face size, the confusion matrix on found
  faces, AP@0.5 per class and mAP, false faces;
- the classifier alone on the annotated boxes (no detector): the confusion matrix, balanced accuracy, and
  the ROC AUC of masked against bare faces (the ranking, which no threshold changes).
Both are sliced by what users ask about: face size, head turn (yaw from the detector's landmarks), blur
(variance of the Laplacian of the face) and darkness (mean brightness), the last two in thirds of the set.

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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from maskwatch.boxes import iou
from maskwatch.crops import DEFAULT_MARGIN, face_crop
from maskwatch.evaluation.common import DEFAULT_LABEL_MAP, IGNORE, fmt, map_label, markdown_table, predict
from maskwatch.faces import Face
from maskwatch.images import ImageError, load_image
from maskwatch.labels import WITH_MASK, WITHOUT_MASK
from maskwatch.pipeline import MaskDetector
from maskwatch.training.metrics import average_precision, roc_auc
from maskwatch.voc import find_scenes, read_voc

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
          counts: Callable[[GroundTruth], bool] = counted,
          iou_threshold: float = IOU_THRESHOLD) -> tuple[list[int | None], list[bool]]:
    """Greedy COCO matching: (matched object index or None, ignored?) for each detection, in input order."""
    matched: set[int] = set()
    result: list[int | None] = [None] * len(boxes)
    ignored = [False] * len(boxes)
    for d in np.argsort(-np.asarray(scores, float), kind="stable"):
        overlaps = [iou(boxes[d], gt.box) for gt in objects]
        free = [i for i, gt in enumerate(objects) if counts(gt) and i not in matched
                and overlaps[i] >= iou_threshold]
        if free:
            best = max(free, key=lambda i: overlaps[i])
            result[d] = best
            matched.add(best)
            continue
        # COCO: a detection on an ignored face, or too small to be counted itself, is neither right nor wrong.
        on_ignored = any(gt.ignored and overlaps[i] >= iou_threshold for i, gt in enumerate(objects))
        ignored[d] = on_ignored or boxes[d][3] - boxes[d][1] < min_face
    return result, ignored


@dataclass
class FaceRecord:
    """One counted annotated face and what each view made of it."""

    file: str
    box: tuple[float, float, float, float]
    label: str
    size: float  # box height, px
    blur: float  # variance of the Laplacian of the face at 64x64 (low: blurred)
    brightness: float  # mean grey level of the face
    alone: np.ndarray  # the classifier's probabilities on the annotated box (detector.labels)
    alone_label: str
    found: bool = False
    predicted: str | None = None  # the pipeline's label of the matched detection
    yaw: float | None = None  # nose offset from the eyes' midpoint over the eye distance (matched detection)


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
    records: list[FaceRecord] = field(default_factory=list)
    false_predicted: Counter = field(default_factory=Counter)  # labels given to false faces


def detect(detector: MaskDetector, image: np.ndarray) -> tuple[list[Detection], list[Face]]:
    """Every face the pipeline finds, with its class probabilities (over ``detector.labels``) and label."""
    faces = detector.faces.detect(image)
    raw = detector.face_probabilities(image, faces)
    labels, probabilities, predicted = detector.labels, detector.project(raw), predict(detector, raw)
    detections = [Detection(face.box, float(face.score), p, labels[k])
                  for face, p, k in zip(faces, probabilities, predicted, strict=True)]
    return detections, faces


def face_records(detector: MaskDetector, image: np.ndarray, scene: Scene, file: str) -> list[FaceRecord | None]:
    """A record for each counted object of ``scene`` (None for ignored ones): the classifier alone on its box."""
    counted_objects = [gt for gt in scene.objects if not gt.ignored]
    raw = detector.face_probabilities(image, [Face(gt.box, 1.0) for gt in counted_objects])
    alone, alone_labels = detector.project(raw), detector.decide(raw)
    records: list[FaceRecord | None] = []
    made = iter(zip(counted_objects, alone, alone_labels, strict=True))
    for gt in scene.objects:
        if gt.ignored:
            records.append(None)
            continue
        _, p, label = next(made)
        assert gt.label is not None
        blur, brightness = face_quality(image, gt.box)
        records.append(FaceRecord(file, gt.box, gt.label, gt.box[3] - gt.box[1], blur, brightness, p, label))
    return records


def face_quality(image: np.ndarray, box: Sequence[float]) -> tuple[float, float]:
    """(sharpness, brightness) of the face in ``box``: Laplacian variance at 64x64, and mean grey level."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    height, width = image.shape[:2]
    face = image[max(0, y1):min(height, y2), max(0, x1):min(width, x2)]
    if face.size == 0:
        return 0.0, 0.0
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(small, cv2.CV_64F).var()), float(grey.mean())


def yaw_ratio(landmarks: np.ndarray) -> float | None:
    """How far the head is turned: the nose's offset from the eyes' midpoint, over the eye distance."""
    points = np.asarray(landmarks, float)
    eyes = abs(points[1, 0] - points[0, 0])
    if eyes < 1e-3:
        return None
    return float((points[2, 0] - (points[0, 0] + points[1, 0]) / 2) / eyes)


def _is_label(label: str) -> Callable[[GroundTruth], bool]:
    return lambda gt: counted(gt) and gt.label == label


def score_scene(scene: Scene, detections: list[Detection], min_face: float, tally: Tally,
                records: Sequence[FaceRecord | None] | None = None, faces: Sequence[Face] | None = None) -> dict:
    """Add one scene to ``tally``; returns its own summary."""
    objects = scene.objects
    boxes = [d.box for d in detections]
    matches, ignored = match(objects, boxes, [d.score for d in detections], min_face)
    for gt in objects:
        if gt.ignored:
            tally.ignored_objects[gt.ignored] += 1
        else:
            tally.faces[gt.label] += 1
    for i, (d, m, skip) in enumerate(zip(detections, matches, ignored, strict=True)):
        d.match, d.ignored = m, skip
        if m is not None:
            tally.found[objects[m].label] += 1
            tally.right[objects[m].label] += d.label == objects[m].label
            record = records[m] if records is not None else None
            if record is not None:
                record.found, record.predicted = True, d.label
                record.yaw = yaw_ratio(faces[i].landmarks) if faces is not None else None
        elif not skip:
            tally.false_predicted[d.label] += 1
    if records is not None:
        tally.records += [r for r in records if r is not None]
    false_faces = sum(m is None and not skip for m, skip in zip(matches, ignored, strict=True))
    tally.detections += len(detections)
    tally.false_faces += false_faces
    tally.ignored_detections += sum(ignored)
    # AP per class: every detection is a candidate for every class, ranked by face score x P(class).
    for k, label in enumerate(tally.labels):
        scores = [d.score * float(d.probabilities[k]) for d in detections]
        hits, left_out = match(objects, boxes, scores, min_face, _is_label(label))
        kept = [i for i in range(len(detections)) if not left_out[i]]
        tally.ap_scores.setdefault(label, []).extend(scores[i] for i in kept)
        tally.ap_hits.setdefault(label, []).extend(hits[i] is not None for i in kept)
    return {"faces": sum(counted(gt) for gt in objects), "found": sum(m is not None for m in matches),
            "right": sum(d.match is not None and d.label == objects[d.match].label for d in detections),
            "false_faces": false_faces, "ignored_objects": sum(bool(gt.ignored) for gt in objects)}


def evaluate_scenes(root: str | Path, detector: MaskDetector, mapping: dict[str, str], min_face: float = 0.0,
                    progress: bool = False, split: str | None = None, out: str | Path | None = None) -> dict:
    """Score the pipeline and the classifier alone on every annotated scene under ``root`` (one split of it).

    With ``out``, also write ``scenes.md``, ``scenes.json`` and a contact sheet of the mislabelled faces there.
    """
    root = Path(root)
    labels = detector.labels
    pairs, lost = find_scenes(root, split)
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
        file = image_path.relative_to(root).as_posix()
        records = face_records(detector, image, scene, file)
        detections, faces = detect(detector, image)
        summary = score_scene(scene, detections, min_face, tally, records, faces)
        per_image.append({"file": file, **summary})
    result = _scene_result(tally, root, effective_map(mapping, labels), min_face, per_image, lost, unreadable)
    result.update(split=split, operating_point=detector.operating_point.to_dict(), two_class=detector.two_class,
                  classifier=str(detector.classifier.path))
    if out is not None:
        write_scene_report(result, tally, root, Path(out))
    return result


def effective_map(mapping: dict[str, str], labels: list[str]) -> dict[str, str]:
    """What each mapped class name (the user's and the default map's) counts as for this model; names that
    count as themselves are left out."""
    effective = {name: map_label(name, mapping, labels) or IGNORE for name in {**DEFAULT_LABEL_MAP, **mapping}}
    return {name: target for name, target in effective.items() if target != name}


SIZE_BINS = ((16, 24, "16-23"), (24, 32, "24-31"), (32, 64, "32-63"), (64, 128, "64-127"), (128, np.inf, "128+"))
# Head turn from the landmarks: |nose offset| / eye distance. Below 0.15 the face looks at the camera;
# past 0.35 one eye is nearly hidden.
YAW_BINS = ((0.0, 0.15, "frontal"), (0.15, 0.35, "turned"), (0.35, np.inf, "side"))


def _bin(value: float | None, bins: Sequence[tuple[float, float, str]]) -> str | None:
    if value is None:
        return None
    return next((name for low, high, name in bins if low <= value < high), None)


def _thirds(values: np.ndarray, names: tuple[str, str, str]) -> tuple[list[tuple[float, float, str]], list[float]]:
    cuts = [float(np.quantile(values, 1 / 3)), float(np.quantile(values, 2 / 3))] if len(values) else [0.0, 0.0]
    return [(-np.inf, cuts[0], names[0]), (cuts[0], cuts[1], names[1]), (cuts[1], np.inf, names[2])], cuts


def slices(records: list[FaceRecord], labels: list[str]) -> dict:
    """Per slice (size, yaw, blur, darkness) and bin: faces, recall and label accuracy of each class, and the
    classifier alone's accuracy on the annotated boxes."""
    blur_bins, blur_cuts = _thirds(np.array([r.blur for r in records]), ("blurriest third", "middle", "sharpest"))
    dark_bins, dark_cuts = _thirds(np.array([r.brightness for r in records]), ("darkest third", "middle",
                                                                              "brightest"))
    keys = {
        "face size (px)": lambda r: _bin(r.size, SIZE_BINS),
        "head turn (yaw)": lambda r: _bin(abs(r.yaw) if r.yaw is not None else None, YAW_BINS),
        "blur": lambda r: _bin(r.blur, blur_bins),
        "darkness": lambda r: _bin(r.brightness, dark_bins),
    }
    result: dict = {"cuts": {"blur": blur_cuts, "darkness": dark_cuts,
                             "yaw": "bins of |nose - eye midpoint| / eye distance: <0.15, 0.15-0.35, >0.35 "
                                    "(found faces only)"}}
    for name, key in keys.items():
        bins: dict[str, dict] = {}
        for record in records:
            value = key(record)
            if value is None:
                continue
            cell = bins.setdefault(value, {label: {"faces": 0, "found": 0, "right": 0, "alone_right": 0}
                                           for label in labels})[record.label]
            cell["faces"] += 1
            cell["found"] += record.found
            cell["right"] += record.found and record.predicted == record.label
            cell["alone_right"] += record.alone_label == record.label
        for cells in bins.values():
            for cell in cells.values():
                cell["recall"] = cell["found"] / cell["faces"] if cell["faces"] else None
                cell["label_accuracy"] = cell["right"] / cell["found"] if cell["found"] else None
                cell["alone_accuracy"] = cell["alone_right"] / cell["faces"] if cell["faces"] else None
        order = [b[2] for b in (SIZE_BINS if "size" in name else YAW_BINS if "yaw" in name else
                                blur_bins if name == "blur" else dark_bins)]
        result[name] = {b: bins[b] for b in order if b in bins}
    return result


def confusion(true: Sequence[str], predicted: Sequence[str], labels: list[str]) -> dict:
    """Confusion matrix (rows: true), per-class recall and precision, accuracy and balanced accuracy."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), int)
    for t, p in zip(true, predicted, strict=True):
        matrix[index[t], index[p]] += 1
    per_class = {}
    for i, label in enumerate(labels):
        actual, said = matrix[i].sum(), matrix[:, i].sum()
        per_class[label] = {"faces": int(actual), "recall": float(matrix[i, i] / actual) if actual else None,
                            "precision": float(matrix[i, i] / said) if said else None}
    recalls = [c["recall"] for c in per_class.values() if c["recall"] is not None]
    return {"labels": labels, "matrix": matrix.tolist(), "per_class": per_class,
            "accuracy": float(np.trace(matrix) / matrix.sum()) if matrix.sum() else None,
            "balanced_accuracy": float(np.mean(recalls)) if recalls else None}


def _alone(records: list[FaceRecord], labels: list[str]) -> dict:
    result = confusion([r.label for r in records], [r.alone_label for r in records], labels)
    if WITH_MASK in labels and WITHOUT_MASK in labels:  # the ranking: P(with_mask) of masked against bare faces
        mask = labels.index(WITH_MASK)
        pairs = [(r.label == WITH_MASK, r.alone[mask]) for r in records if r.label in (WITH_MASK, WITHOUT_MASK)]
        result["roc_auc_masked_vs_bare"] = roc_auc(np.array([a for a, _ in pairs], bool),
                                                   np.array([b for _, b in pairs])) if pairs else None
    return result


def _scene_result(tally: Tally, root: Path, mapping: dict[str, str], min_face: float, per_image: list[dict],
                  lost: list[str], unreadable: list[str]) -> dict:
    per_class = {}
    for label in tally.labels:
        faces, found, right = tally.faces[label], tally.found[label], tally.right[label]
        per_class[label] = {
            "faces": faces, "found": found, "recall": found / faces if faces else None,
            "label_accuracy": right / found if found else None,
            "ap50": average_precision(np.array(tally.ap_scores.get(label, []), float),
                                      np.array(tally.ap_hits.get(label, []), bool), faces),
        }
    faces, found, right = (sum(c.values()) for c in (tally.faces, tally.found, tally.right))
    aps = [c["ap50"] for c in per_class.values() if c["ap50"] is not None and c["faces"]]
    matched = [r for r in tally.records if r.found]
    result = {
        "data": str(root), "labels": tally.labels, "images": len(per_image), "min_face": min_face,
        "label_map": mapping, "iou_threshold": IOU_THRESHOLD,
        "ap_ranking": "face score x P(class); every detection is a candidate for every class",
        "per_class": per_class,
        "all": {"faces": faces, "found": found, "recall": found / faces if faces else None,
                "label_accuracy": right / found if found else None,
                "map50": float(np.mean(aps)) if aps else None},
        "detections": tally.detections, "false_faces": tally.false_faces,
        "false_faces_by_label": dict(tally.false_predicted),
        "ignored_detections": tally.ignored_detections, "ignored_objects": dict(tally.ignored_objects),
        "annotations_without_image": lost, "unreadable": unreadable, "per_image": per_image,
    }
    if tally.records:
        result["found_confusion"] = confusion([r.label for r in matched], [r.predicted or "" for r in matched],
                                              tally.labels)
        result["classifier_alone"] = _alone(tally.records, tally.labels)
        result["slices"] = slices(tally.records, tally.labels)
        result["by_size"] = {name: {label: _size_cell(tally.records, label, low, high) for label in tally.labels}
                             for low, high, name in (*SIZE_BINS, (24, np.inf, "24+"))}
    return result


def _size_cell(records: list[FaceRecord], label: str, low: float, high: float) -> dict:
    chosen = [r for r in records if r.label == label and low <= r.size < high]
    found = [r for r in chosen if r.found]
    right = sum(r.predicted == label for r in found)
    return {"faces": len(chosen), "found": len(found), "recall": len(found) / len(chosen) if chosen else None,
            "label_accuracy": right / len(found) if found else None}


def scenes_markdown(result: dict) -> str:
    rows = [[label, c["faces"], c["found"], c["recall"], c["label_accuracy"], c["ap50"]]
            for label, c in result["per_class"].items()]
    total = result["all"]
    rows.append(["all", total["faces"], total["found"], total["recall"], total["label_accuracy"],
                 f"mAP {fmt(total['map50'])}"])
    ignored = ", ".join(f"{why}: {n}" for why, n in sorted(result["ignored_objects"].items())) or "none"
    mapped = ", ".join(f"{name} -> {target}" for name, target in sorted(result["label_map"].items()))
    notes = [
        f"{result['images']} annotated images in `{result['data']}`"
        + (f" (split `{result['split']}`)" if result.get("split") else "")
        + f"; a face is found when a detection overlaps it with IoU >= {result['iou_threshold']}. AP@0.5 is "
        "all-point interpolated, detections ranked by face score x class probability.",
        f"Ignored ground truth (neither missed nor making its detections false): {ignored}; "
        f"--min-face {result['min_face']:g} px (box height). Class map: {mapped or 'none'}.",
        f"Detections {result['detections']}: false faces {result['false_faces']}, "
        f"ignored {result['ignored_detections']}.",
    ]
    if result.get("operating_point"):
        point = result["operating_point"]
        notes.append(f"Operating point: with_mask when P(with_mask) >= {point['mask_threshold']:g}; "
                     f"incorrect_mask when it holds >= {point['incorrect_threshold']:g} of the rest"
                     + (" (two-class mode: incorrect_mask reported as without_mask)" if result.get("two_class")
                        else "") + ".")
    if result["annotations_without_image"] or result["unreadable"]:
        notes.append(f"Skipped: {len(result['annotations_without_image'])} annotation files without an image, "
                     f"{len(result['unreadable'])} unreadable images.")
    table = markdown_table(["class", "faces", "found", "recall", "label accuracy", "AP@0.5"], rows)
    parts = [table, *notes]
    if "by_size" in result:
        parts += ["### By face size (px): recall / label accuracy", _md_by_size(result),
                  "### Confusion on found faces (rows: true, columns: predicted)", _md_confusion(
                      result["found_confusion"]),
                  "### The classifier alone on the annotated boxes (no detector)", _md_confusion(
                      result["classifier_alone"]) + f"\n\nROC AUC, P(with_mask) of masked vs bare faces: "
                  f"{fmt(result['classifier_alone'].get('roc_auc_masked_vs_bare'), 4)}",
                  "### Slices: label accuracy of found faces (classifier alone in brackets)", _md_slices(result)]
    return "\n\n".join(parts) + "\n"


def _md_by_size(result: dict) -> str:
    labels = result["labels"]
    rows = []
    for name, cells in result["by_size"].items():
        rows.append([name, *[f"{cells[label]['faces']}: {fmt(cells[label]['recall'])} / "
                             f"{fmt(cells[label]['label_accuracy'])}" for label in labels]])
    return markdown_table(["face px", *[f"{label} (n: recall / label acc.)" for label in labels]], rows)


def _md_confusion(block: dict) -> str:
    labels = block["labels"]
    rows = [[label, *row, fmt(block["per_class"][label]["recall"]), fmt(block["per_class"][label]["precision"])]
            for label, row in zip(labels, block["matrix"], strict=True)]
    return (markdown_table(["true \\ predicted", *labels, "recall", "precision"], rows)
            + f"\n\naccuracy {fmt(block['accuracy'])}, balanced accuracy {fmt(block['balanced_accuracy'])}")


def _md_slices(result: dict) -> str:
    labels = result["labels"]
    rows = []
    for name, bins in result["slices"].items():
        if name == "cuts":
            continue
        for value, cells in bins.items():
            rows.append([name, value, *[f"{cells[label]['found']}: {fmt(cells[label]['label_accuracy'])} "
                                        f"({fmt(cells[label]['alone_accuracy'])})" for label in labels]])
    cuts = result["slices"]["cuts"]
    note = (f"Blur thirds cut at Laplacian variance {cuts['blur'][0]:.0f} / {cuts['blur'][1]:.0f}; darkness "
            f"thirds at mean grey {cuts['darkness'][0]:.0f} / {cuts['darkness'][1]:.0f}; yaw: {cuts['yaw']}.")
    return markdown_table(["slice", "bin", *[f"{label} (found: accuracy)" for label in labels]], rows) + "\n\n" + note


# The contact sheet of mislabelled faces shows at most this many, the most confident mistakes first.
ERROR_SHEET_LIMIT = 96
ERROR_SHEET = "scene_errors.jpg"


def write_scene_report(result: dict, tally: Tally, root: Path, out: Path) -> None:
    """scenes.md, scenes.json and the contact sheet of mislabelled found faces (for the run folder only)."""
    from maskwatch.evaluation import plots
    from maskwatch.evaluation.run_report import dumps_json

    out.mkdir(parents=True, exist_ok=True)
    labels = tally.labels
    wrong = [r for r in tally.records if r.found and r.predicted != r.label]
    wrong.sort(key=lambda r: -float(r.alone[labels.index(r.predicted)]) if r.predicted in labels else 0.0)
    tiles = []
    for record in wrong[:ERROR_SHEET_LIMIT]:
        image = load_image(root / record.file)
        crop = face_crop(image, record.box, 128, DEFAULT_MARGIN)
        tiles.append((crop, [f"true {record.label}", f"said {record.predicted}", Path(record.file).name[:20]]))
    if tiles:
        plots.contact_sheet(tiles, out / ERROR_SHEET)
        result["error_sheet"] = str(out / ERROR_SHEET)
    (out / "scenes.md").write_text(scenes_markdown(result))
    (out / "scenes.json").write_text(dumps_json(result))
