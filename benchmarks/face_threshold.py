"""How YuNet's face score threshold trades masked-face recall against false faces.

For each threshold it prints, per class of the training set, the share of images
in which at least one face scores that high (masked faces score lower), and the
number of face-free photos (scikit-image's samples without people, at three scales and
mirrored: 72 images) with a false face.

    python benchmarks/face_threshold.py ../shared/datasets/face-mask [--face-model FILE] [--extra-scale 2]

The face-free photos go through the model's photo default passes, or ``--extra-scale`` ones
(``--extra-passes-as-stock``: mirrored, faces up to 128 px, the stock model's way).

Detections are cached with the training crop cache, so a second run is instant.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from maskwatch.faces import YuNetDetector
from maskwatch.faces.yunet import DEFAULT_SCORE_THRESHOLD, STOCK_EXTRA_PASSES
from maskwatch.model_files import cache_dir
from maskwatch.training.data import scan_dataset
from maskwatch.training.face_cache import STORE_THRESHOLD, FaceCropCache

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9)


def face_free_images() -> list[np.ndarray]:
    """Photos without people, from scikit-image if it is installed (pip install scikit-image)."""
    try:
        from skimage import data
    except ImportError:
        return []
    names = ["coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "hubble_deep_field",
             "immunohistochemistry", "retina", "horse", "clock"]
    images = []
    for name in names:
        image = np.asarray(getattr(data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = np.ascontiguousarray(image[:, :, :3][:, :, ::-1])
        for scale in (0.5, 1.0, 2.0):
            resized = cv2.resize(image, None, fx=scale, fy=scale)
            images += [resized, np.ascontiguousarray(resized[:, ::-1])]
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--face-model")
    parser.add_argument("--extra-scale", type=float, action="append", default=None,
                        help="face-free photos: a pass at this multiple of the base scale (repeatable)")
    parser.add_argument("--extra-passes-as-stock", action="store_true",
                        help="face-free photos: extra passes mirrored, faces up to 128 px (the stock model's way)")
    args = parser.parse_args()
    if args.extra_passes_as_stock and not args.extra_scale:
        parser.error("--extra-passes-as-stock needs --extra-scale (the shipped model's photo default is one pass)")
    samples, labels = scan_dataset(args.data_dir)
    detector = YuNetDetector(args.face_model, extra_scales=())  # as training cuts its crops
    cache = FaceCropCache(cache_dir() / "train", detector, 0.2, DEFAULT_SCORE_THRESHOLD)
    records = cache.build(samples)
    best = {label: np.array([max([d[4] for d in records[s.sha256].detections], default=0.0)
                             for s in samples if s.label == label and not records[s.sha256].error])
            for label in labels}
    default = YuNetDetector(args.face_model).score_threshold  # from the model's metadata (stock: 0.5)
    detector = YuNetDetector(args.face_model, score_threshold=STORE_THRESHOLD,  # None: the photo default's passes
                             extra_scales=tuple(args.extra_scale) if args.extra_scale else None)
    if args.extra_passes_as_stock:  # else the file's way
        for name, value in STOCK_EXTRA_PASSES.items():
            setattr(detector, name, value)
    negatives = [max([f.score for f in detector.detect(img)], default=0.0) for img in face_free_images()]
    print(f"images: {', '.join(f'{label} {len(v)}' for label, v in best.items())}; "
          f"face-free photos: {len(negatives)}")
    header = "threshold | " + " | ".join(f"{label} found" for label in labels) + " | face-free photos with a face"
    print(header)
    print("|".join("---" for _ in header.split("|")))
    for t in THRESHOLDS:
        rates = " | ".join(f"{np.mean(best[label] >= t):.3f}" for label in labels)
        false = sum(score >= t for score in negatives)
        mark = "  <- the model's default" if abs(t - default) < 1e-9 else ""
        print(f"{t:g} | {rates} | {false}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
