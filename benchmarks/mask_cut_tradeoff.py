"""Where a classifier's mask cut trades masked faces labelled right against people let through, and what a
mean of classifiers' outputs does to it, on `mask-scenes` val with the shipped face model.

For each classifier (or the weighted mean of their probabilities, ``--weights``), on the val faces of 16 px
and up that the face model finds, and on the annotated boxes alone:

- the operating point that training's rule chooses (``training.operating_point``: the best macro F1 over the
  classes, on the annotated boxes here) and, at it, the issue's figures: masked and bare faces labelled right,
  masks below the nose (recall / precision), people let through as masked (bare or mask below the nose,
  called ``with_mask``), the classifier alone's balanced accuracy;
- ROC AUC of P(with_mask) on the boxes: masked against bare, and masked against masks below the nose;
- the same figures with the mask cut moved (``--mask-threshold`` of ``maskwatch evaluate``), the
  below-the-nose cut kept, or moved too (``--below-cuts``: every pair of the two cuts).

    python benchmarks/mask_cut_tradeoff.py ../shared/datasets/mask-scenes
    python benchmarks/mask_cut_tradeoff.py ../shared/datasets/mask-scenes \\
        --classifier runs/scenes-v8/mask_classifier.onnx --classifier runs/scenes-v9/mask_classifier.onnx \\
        --weights 0.7 0.3
    python benchmarks/mask_cut_tradeoff.py ../shared/datasets/mask-scenes --below-cuts 0.2 0.3 0.375 0.5

Each classifier runs once on the photos (about 40 s each on 2 cores); a mean here costs one network run per
member at inference, which ``maskwatch average`` (one network, weights averaged) does not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from maskwatch import MaskDetector, Options
from maskwatch.classifier.decision import OperatingPoint
from maskwatch.evaluation.scenes import load_scene, match
from maskwatch.faces import Face
from maskwatch.images import ImageError, load_image
from maskwatch.labels import INCORRECT_MASK, WITH_MASK, WITHOUT_MASK
from maskwatch.training.metrics import roc_auc
from maskwatch.training.operating_point import choose_operating_point
from maskwatch.voc import find_scenes

MIN_FACE = 16.0
MASK_CUTS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)


def probabilities(root: Path, classifier: str | None) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The classifier's labels and, for "found" and "boxes", (true labels, probabilities) of the val faces."""
    detector = MaskDetector.from_options(Options(classifier=classifier))
    labels = list(detector.classifier.labels)
    if set(labels) != {WITH_MASK, WITHOUT_MASK, INCORRECT_MASK}:
        raise SystemExit(f"{classifier}: a three-class classifier is needed, not {labels}")
    truth: dict[str, list[str]] = {"found": [], "boxes": []}
    rows: dict[str, list[np.ndarray]] = {"found": [], "boxes": []}
    for image_path, xml in find_scenes(root, "val")[0]:
        scene = load_scene(image_path, xml, labels, {}, MIN_FACE)
        try:
            image = load_image(image_path, detector.max_pixels)
        except ImageError:
            continue
        faces = detector.faces.detect(image)
        matches, _ = match(scene.objects, [f.box for f in faces], [f.score for f in faces], MIN_FACE)
        found = [(face, scene.objects[m]) for face, m in zip(faces, matches, strict=True) if m is not None]
        counted = [gt for gt in scene.objects if not gt.ignored]
        for key, pairs in (("found", found), ("boxes", [(Face(gt.box, 1.0), gt) for gt in counted])):
            if pairs:
                rows[key] += list(detector.face_probabilities(image, [face for face, _ in pairs]))
                truth[key] += [str(gt.label) for _, gt in pairs]
    return labels, {key: (np.array(truth[key]), np.array(rows[key])) for key in rows}


def figures(labels: list[str], found: tuple[np.ndarray, np.ndarray], boxes: tuple[np.ndarray, np.ndarray],
            point: OperatingPoint) -> str:
    true, probs = found
    predicted = np.array(point.labels(probs, labels))
    right = {label: float((predicted[true == label] == label).mean()) for label in labels}
    called = predicted == INCORRECT_MASK
    precision = float((true[called] == INCORRECT_MASK).mean()) if called.any() else float("nan")
    let_through = int(((true != WITH_MASK) & (predicted == WITH_MASK)).sum())
    flagged = int(((true == WITH_MASK) & (predicted != WITH_MASK)).sum())
    box_true, box_probs = boxes
    box_predicted = np.array(point.labels(box_probs, labels))
    alone = np.mean([(box_predicted[box_true == label] == label).mean() for label in labels])
    return (f"{right[WITH_MASK]:.3f} | {right[WITHOUT_MASK]:.3f} | {right[INCORRECT_MASK]:.3f} / {precision:.3f} | "
            f"{let_through} of {int((true != WITH_MASK).sum())} | {flagged} of {int((true == WITH_MASK).sum())} | "
            f"{alone:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenes", type=Path)
    parser.add_argument("--classifier", action="append", default=[], help="ONNX file (repeat for a mean); "
                        "default: the shipped one")
    parser.add_argument("--weights", type=float, nargs="+", help="one per --classifier (default: equal)")
    parser.add_argument("--below-cuts", type=float, nargs="+", metavar="CUT",
                        help="below-the-nose cuts to pair with every mask cut (default: training's rule's own)")
    args = parser.parse_args()
    files = args.classifier or [None]
    weights = args.weights or [1.0 / len(files)] * len(files)
    if len(weights) != len(files) or any(w < 0 for w in weights) or not sum(weights):
        parser.error("--weights takes one non-negative number per --classifier")
    if any(not 0.0 <= cut <= 1.0 for cut in args.below_cuts or []):
        parser.error("--below-cuts takes shares between 0 and 1")
    weights = [w / sum(weights) for w in weights]
    runs = [probabilities(args.scenes, file) for file in files]
    labels = runs[0][0]
    if any(run[0] != labels for run in runs):
        parser.error("the classifiers' labels differ")
    merged = {key: (runs[0][1][key][0], sum(w * run[1][key][1] for w, run in zip(weights, runs, strict=True)))
              for key in ("found", "boxes")}
    box_true, box_probs = merged["boxes"]
    point, _ = choose_operating_point(box_probs, np.array([labels.index(t) for t in box_true]), labels)
    mask = labels.index(WITH_MASK)
    aucs = [roc_auc(box_true[keep] == WITH_MASK, box_probs[keep, mask])
            for keep in (box_true != INCORRECT_MASK, box_true != WITHOUT_MASK)]
    name = " + ".join(f"{w:g} x {file or 'the shipped classifier'}" for w, file in zip(weights, files, strict=True))
    print(f"{name}; {args.scenes} val, faces of 16 px and up: {len(merged['found'][0])} found by the shipped face "
          f"model, {len(box_true)} annotated boxes")
    print(f"ROC AUC of P(with_mask) on the boxes: masked vs bare {aucs[0]:.4f}, masked vs below the nose "
          f"{aucs[1]:.4f}")
    print("operating point (mask / below the nose) | masked right | bare right | below the nose: recall / "
          "precision | let through as masked | masked flagged | classifier alone: balanced accuracy")
    print("|".join(["---"] * 7))
    print(f"{point.mask_threshold:g} / {point.incorrect_threshold:g} (training's rule) | "
          + figures(labels, merged["found"], merged["boxes"], point))
    for below in args.below_cuts or [point.incorrect_threshold]:
        for cut in MASK_CUTS:
            moved = OperatingPoint(cut, below)
            print(f"{cut:g} / {below:g} | " + figures(labels, merged["found"], merged["boxes"], moved))
    return 0


if __name__ == "__main__":
    sys.exit(main())
