"""``maskwatch evaluate --faces DIR``: the whole pipeline on class-per-folder photos of one face each.

Each image goes through what ``maskwatch detect`` does: decode, find faces, crop,
classify. The largest face is the image's face; images with no face found are
counted (and count as wrong in the all-images accuracy), not silently dropped.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maskwatch.evaluation.common import IGNORE, fmt, map_label, markdown_table, predict
from maskwatch.images import IMAGE_SUFFIXES, ImageError, load_image
from maskwatch.labels import WITH_MASK
from maskwatch.pipeline import MaskDetector
from maskwatch.training.metrics import classification_report, expected_calibration_error, roc_auc


def scan_face_folders(root: Path, labels: list[str], mapping: dict[str, str]) -> list[tuple[Path, str]]:
    """(image, label) for every image under ``root/<class>/``; each folder must name a label (or be mapped)."""
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    items, unknown = [], []
    for folder in folders:
        label = map_label(folder.name, mapping, labels)
        if label is None:
            if mapping.get(folder.name) != IGNORE:
                unknown.append(folder.name)
            continue
        items += [(path, label) for path in sorted(folder.rglob("*"))
                  if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
    if unknown:
        raise ValueError(f"folders {unknown} in {root} are not the model's labels {labels}; rename them or "
                         "map them with --map-label NAME=LABEL (or NAME=ignore)")
    if not items:
        raise ValueError(f"no images found in class folders of {root}")
    return items


def evaluate_faces(root: str | Path, detector: MaskDetector, mapping: dict[str, str],
                   progress: bool = False) -> dict:
    labels = detector.labels
    items = scan_face_folders(Path(root), labels, mapping)
    index = {label: i for i, label in enumerate(labels)}
    y, probabilities, images = [], [], []
    missed: Counter[tuple[str, str]] = Counter()
    for path, label in tqdm(items, desc="faces", unit="img", disable=not progress, file=sys.stderr):
        entry = {"file": path.relative_to(root).as_posix(), "label": label}
        images.append(entry)
        try:
            image = load_image(path, detector.max_pixels)
        except ImageError as exc:
            missed[(label, "unreadable")] += 1
            entry["error"] = str(exc)
            continue
        faces = detector.faces.detect(image)
        if not faces:
            missed[(label, "no_face")] += 1
            entry["error"] = "no face found"
            continue
        largest = max(faces, key=lambda f: f.width * f.height)
        probabilities.append(detector.face_probabilities(image, [largest])[0])
        y.append(index[label])
        entry.update(faces=len(faces), box=[round(float(v), 1) for v in largest.box])
    raw = np.reshape(probabilities, (-1, len(detector.classifier.labels)))
    return _face_scores(np.array(y, int), detector.project(raw), predict(detector, raw), labels,
                        detector.mask_threshold, images, missed, str(root))


def _face_scores(y: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray, labels: list[str],
                 mask_threshold: float, images: list[dict], missed: Counter, root: str) -> dict:
    for entry, p, k in zip((e for e in images if "error" not in e), probabilities, predicted, strict=True):
        entry.update(predicted=labels[k], p_with_mask=round(float(p[labels.index(WITH_MASK)]), 4))
    scores = classification_report(y, predicted, labels)
    mask = labels.index(WITH_MASK)
    scores["roc_auc"] = roc_auc(y == mask, probabilities[:, mask])
    scores["ece"] = expected_calibration_error(probabilities, y) if len(y) else None
    totals = Counter(e["label"] for e in images)
    per_class = {label: {"images": totals[label], "no_face": missed[(label, "no_face")],
                         "unreadable": missed[(label, "unreadable")]} for label in labels}
    correct = int((predicted == y).sum())
    return {
        "data": root, "labels": labels, "mask_threshold": mask_threshold,
        "images": len(images), "classified": len(y),
        "no_face": sum(c["no_face"] for c in per_class.values()),
        "unreadable": sum(c["unreadable"] for c in per_class.values()),
        "accuracy_all_images": correct / len(images) if images else None,
        "counts": per_class, "scores": scores, "per_image": images,
    }


def faces_markdown(result: dict) -> str:
    scores, labels = result["scores"], result["labels"]
    rows = [[label, result["counts"][label]["images"], result["counts"][label]["no_face"],
             *(scores["per_class"][label][k] for k in ("precision", "recall", "f1"))] for label in labels]
    summary = [
        ["accuracy (images with a face)", fmt(scores["accuracy"], 4)],
        ["accuracy (all images; no face or unreadable = wrong)", fmt(result["accuracy_all_images"], 4)],
        [f"ROC AUC (score P({WITH_MASK}))", fmt(scores["roc_auc"], 4)],
        ["ECE (15 bins, top label)", fmt(scores["ece"], 4)],
    ]
    return "\n\n".join([
        f"{result['images']} images in `{result['data']}`: {result['classified']} classified (largest face), "
        f"{result['no_face']} with no face found, {result['unreadable']} unreadable; "
        f"with_mask when P(with_mask) >= {result['mask_threshold']}.",
        markdown_table(["class", "images", "no face", "precision", "recall", "F1"], rows),
        markdown_table(["metric", "value"], summary),
    ]) + "\n"
