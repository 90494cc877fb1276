"""The paper's two-class protocol for a trained classifier at several mask cuts, without its run folders.

    python benchmarks/paper_protocol_by_cut.py [--classifier FILE] [--face-model FILE ...] [--errors]
        [--photo NAME ...] [--face-fallback SCORE]

A mean of models (``maskwatch average``) is scored only on photos that are test photos of every averaged
model; one trained model on its own test photos. The metadata keeps each model's training configuration
and split fingerprint, so the splits can be rebuilt as ``maskwatch train`` made them (scan, crop, group
near-copies, split): each with the face model that reproduces its fingerprint: the ``--face-model`` files
first, then the shipped detector and the stock YuNet (a configuration says ``null`` for the face model
shipped when it was trained). A split that no face model reproduces stops the script. ``maskwatch
evaluate RUN_DIR`` prints the same figures when the run folders are at hand. ``--photo`` shows where named
photos fell in the (first) model's split and how the model calls them, test photos or not.
``--face-fallback`` cuts the test crops with ``maskwatch train --face-fallback``'s rule (the best face down
to that score when none reaches the threshold, instead of the whole photo), for a model trained without it.

The shipped classifier is the mean of two fine-tunes' weights on one split (``scenes-v11`` and ``scenes-v8``;
``maskwatch evaluate runs/soup-v11v8`` has its figures). The one fine-tune shipped before it, ``scenes-v8``
(sha256 ``99a23fd3…``), is at commit 7dc8a67. The mean shipped before that (sha256 ``8f5fa42a…``) has a
160 px half whose crops were cut by the face model shipped then (``detector-v2``, sha256 ``3f371271…``).
Both are in the history, e.g. at commit 250d67e::

    git show 250d67e:src/maskwatch/models/mask_classifier.onnx > mean.onnx
    git show 250d67e:src/maskwatch/models/face_detector.onnx > detector-v2.onnx
    python benchmarks/paper_protocol_by_cut.py --classifier mean.onnx --face-model detector-v2.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from maskwatch.classifier.decision import OperatingPoint
from maskwatch.classifier.onnx_classifier import MaskClassifier
from maskwatch.labels import INCORRECT_MASK, WITH_MASK, two_class
from maskwatch.model_files import cache_dir
from maskwatch.training.augment import resize_to
from maskwatch.training.config import data_seed
from maskwatch.training.data import Sample, deal_split, fingerprint, scan_sources
from maskwatch.training.face_cache import FaceCropCache, found_face, run_crop_cache
from maskwatch.training.operating_point import TWO_CLASS_SWEEP, two_class_accuracy

FACE_MODELS = (None, "stock")  # the shipped detector, then OpenCV Zoo's YuNet


def rebuild_split(config: dict, expected: str, face_models: list[str]) -> tuple[list[Sample], FaceCropCache]:
    """The samples of a training run, split as it split them, and the crop cache that cut them."""
    roots = [Path(p) for p in [config["data_dir"], *config.get("extra_data", [])]]
    candidates = [config["face_model"]] if config.get("face_model") else [*face_models, *FACE_MODELS]
    for face_model in candidates:
        samples, _labels = scan_sources(roots)
        cache = run_crop_cache(config, cache_dir() / "train", face_model)
        records = cache.build(samples)
        samples = [s for s in samples if not records[s.sha256].error]
        if config.get("split_from") and not Path(config["split_from"]).is_file():
            sys.exit(f"split {expected} was read from {config['split_from']}, which is not here")
        deal_split(samples, cache.crop_hash, seed=data_seed(config["seed"], config.get("split_seed")),
                   near_duplicates=config.get("near_duplicates", True), split_from=config.get("split_from"))
        if fingerprint(samples, with_split=True) == expected:
            print(f"split {expected}: rebuilt with face model {face_model or 'shipped'}", file=sys.stderr)
            return samples, cache
    sys.exit(f"no face model reproduces split {expected}")


# Issue 9's crowd targets count faces of 16 px and up; the errors list says which portraits hold a smaller face.
SMALL_FACE = 16


def face_box_size(cache: FaceCropCache, sample: Sample) -> tuple[float, float] | None:
    """The cropped face's width and height in the photo's pixels; None when the crop is not a found face."""
    if not found_face(cache, sample):
        return None
    x1, y1, x2, y2 = cache.records[sample.sha256].used_box or (0, 0, 0, 0)
    return x2 - x1, y2 - y1


def small_face(cache: FaceCropCache, sample: Sample) -> bool:
    """Whether the crop is a face under SMALL_FACE px on its shorter side, or no found face (the whole photo)."""
    return min(face_box_size(cache, sample) or (0, 0)) < SMALL_FACE


def face_size(cache: FaceCropCache, sample: Sample) -> str:
    record = cache.records[sample.sha256]
    if (size := face_box_size(cache, sample)) is None:
        return f"whole photo {record.width}x{record.height}"
    return f"{size[0]:.0f}x{size[1]:.0f} px{' (fallback)' if record.fallback else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default=None,
                        help="a mean of models or one trained model (default: the shipped one)")
    parser.add_argument("--face-model", action="append", default=[],
                        help="a face model to try first when rebuilding a split (repeatable)")
    parser.add_argument("--errors", action="store_true",
                        help="also list the photos wrong at the model's own operating point")
    parser.add_argument("--face-fallback", type=float, default=None, metavar="SCORE",
                        help="cut the test and named photos' crops with this fallback face score (maskwatch "
                             "train --face-fallback; 0: the whole photo); the split is rebuilt as trained")
    parser.add_argument("--photo", action="append", default=[],
                        help="a photo's file name: its split and the model's call (repeatable)")
    args = parser.parse_args()
    classifier = MaskClassifier(args.classifier)
    members = classifier.metadata.get("averaged_from") or [classifier.metadata]
    if any("maskwatch_train_config" not in m or "split_fingerprint" not in m for m in members):
        sys.exit(f"{classifier.path} does not say how it was trained (no training configuration or split)")
    by_fingerprint: dict[str, tuple[list[Sample], FaceCropCache]] = {}  # members on one split: rebuilt once
    for m in members:
        if m["split_fingerprint"] not in by_fingerprint:
            by_fingerprint[m["split_fingerprint"]] = rebuild_split(m["maskwatch_train_config"], m["split_fingerprint"],
                                                                   args.face_model)
    rebuilt = [by_fingerprint[m["split_fingerprint"]] for m in members]
    splits = [{s.sha256: s.split for s in samples} for samples, _cache in rebuilt]
    first, cache = rebuilt[0]
    test = [s for s in first if all(split.get(s.sha256) == "test" for split in splits)]
    named = [s for s in first if s.path.name in args.photo]
    if args.face_fallback is not None:
        try:
            cache = cache.with_fallback(args.face_fallback)
        except ValueError as exc:
            sys.exit(str(exc))
        cache.build([*test, *named])
        print(f"test crops cut with a fallback face score of {args.face_fallback:g}", file=sys.stderr)

    def views_of(samples: list[Sample]) -> list[np.ndarray]:
        return [resize_to(cache.load(s.sha256), classifier.input_size) for s in samples]

    views = views_of(test)
    probabilities = np.concatenate([classifier.probabilities(views[i:i + 64]) for i in range(0, len(views), 64)])
    y = np.array([classifier.labels.index(s.label) for s in test], int)
    point = classifier.operating_point
    shared = f", test photos of all {len(members)} averaged models" if len(members) > 1 else ""
    print(f"{classifier.path}: {len(test)} test photos{shared}")
    print(f"argmax accuracy (three classes) {float((probabilities.argmax(1) == y).mean()):.4f}")
    print("mask cut | two-class accuracy | errors")
    print("---|---|---")
    for cut in TWO_CLASS_SWEEP:
        moved = OperatingPoint(cut, point.incorrect_threshold)
        accuracy = two_class_accuracy(probabilities, y, classifier.labels, moved)
        assert accuracy is not None
        mark = "  <- the model's own" if abs(cut - point.mask_threshold) < 1e-9 else ""
        print(f"{cut:g} | {accuracy:.4f} | {round((1 - accuracy) * len(y))}{mark}")
    mask = classifier.labels.index(WITH_MASK)
    if args.errors:
        print("\nwrong at the model's own operating point (two classes): file, label, called, P(with_mask), face")
        wrong: list[tuple[Sample, str]] = []
        for sample, index, p in zip(test, point.indices(probabilities, classifier.labels), probabilities, strict=True):
            called = classifier.labels[index]
            if two_class(called) != two_class(sample.label):
                print(f"{sample.path.name} | {sample.label} | {called} | {p[mask]:.3f} | {face_size(cache, sample)}")
                wrong.append((sample, called))
        # Near-copies share a group and a split, so one photo kept three times is three errors.
        below_nose = sum(s.label == WITH_MASK and c == INCORRECT_MASK for s, c in wrong)
        small = [s for s in test if small_face(cache, s)]
        print(f"{len(wrong)} errors on {len({s.group or s.sha256 for s, _ in wrong})} distinct photos (near-copies "
              f"as one); with_mask photos called incorrect_mask (bare in the two-class view): {below_nose}; on a "
              f"face under {SMALL_FACE} px or the whole photo: {sum(small_face(cache, s) for s, _ in wrong)} (of "
              f"{len(small)} such test photos)")
    if named:
        print("\nnamed photos: file, split, label, called, P(with_mask)")
        named_p = classifier.probabilities(views_of(named))
        for sample, index, p in zip(named, point.indices(named_p, classifier.labels), named_p, strict=True):
            print(f"{sample.path.name} | {sample.split} | {sample.label} | {classifier.labels[index]} | {p[mask]:.3f}")
    if missing := sorted(set(args.photo) - {s.path.name for s in named}):
        print(f"not in the data: {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
