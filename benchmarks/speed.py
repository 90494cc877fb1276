"""Speed, side by side in one run: the classifier per face, and the whole pipeline per 640x480 frame.

    python benchmarks/speed.py [--repeats 30] [--compare-stock] [--classifier FILE ...]

Frames are built from real photos of the shared data set (faces pasted at
48-80 px onto a blurred photo) so YuNet and the classifier do real work.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from maskwatch import MaskDetector, Options, load_image
from maskwatch.crops import face_crop
from maskwatch.faces.yunet import STOCK_PHOTO_EXTRA_SCALES, YuNetDetector
from maskwatch.synthetic import face_patch, free_spot, paste

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "face-mask"


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` runs after two warm-up runs."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def make_frame(detector: MaskDetector, faces: int, rng: np.random.Generator, data: Path) -> np.ndarray:
    photos = sorted((data / "without_mask").glob("*.jpg"))[:40] + sorted((data / "with_mask").glob("*.jpg"))[:40]
    background = cv2.GaussianBlur(cv2.resize(load_image(photos[-1]), (640, 480)), (0, 0), 9)
    taken: list[np.ndarray] = []
    for path in rng.permutation(photos):
        if len(taken) == faces:
            break
        image = load_image(path)
        found = detector.faces.detect(image)
        if not found:
            continue
        patch, alpha, box = face_patch(image, found[0].box, int(rng.integers(48, 80)))
        spot = free_spot(taken, patch.shape[1], patch.shape[0], 640, 480, rng)
        if spot:
            paste(background, patch, alpha, *spot)
            taken.append(box + np.array([*spot, *spot], np.float32))
    return background


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--compare-stock", action="store_true",
                        help="also time the stock YuNet (--face-model stock) with its old three-pass default")
    parser.add_argument("--classifier", action="append", default=[], metavar="FILE",
                        help="also time the photo default with this mask classifier (repeatable)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    detector = MaskDetector()
    classifier = detector.classifier
    size = classifier.input_size
    frames = {n: make_frame(detector, n, rng, Path(args.data)) for n in (1, 8)}

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; onnxruntime CPU; "
          f"classifier {classifier.metadata['backbone']} at {size} px; median of {args.repeats}")
    print("what | ms")
    print("---|---")
    others = {path: MaskDetector.from_options(Options.photo(classifier=path)) for path in args.classifier}
    found = detector.faces.detect(frames[8])
    for name, model in [("shipped", classifier), *((path, p.classifier) for path, p in others.items())]:
        # Each model gets the same faces, cut at its own input size.
        cut = [face_crop(frames[8], f.box, model.input_size, model.crop_margin) for f in found]
        cut = (cut * 8)[:8]
        batch1 = timed(lambda m=model, c=cut: m.mask_probability(c[:1]), args.repeats)
        batch8 = timed(lambda m=model, c=cut: m.mask_probability(c), args.repeats)
        print(f"classifier {name} ({model.input_size} px), 1 face (batch 1) | {batch1:.2f}")
        print(f"classifier {name} ({model.input_size} px), per face in a batch of 8 | {batch8 / 8:.2f}")
    # The face stage, side by side: the shipped model at the photo default, and the stock YuNet with the
    # passes it needed (the photo default before maskwatch's own model) and with one pass.
    configurations = [
        ("maskwatch YuNet, photo default (onnxruntime)", MaskDetector.from_options(Options.photo())),
        ("maskwatch YuNet, photo default, through cv2.FaceDetectorYN",
         MaskDetector(face_detector=YuNetDetector(engine="opencv"))),
    ]
    configurations += [(f"maskwatch YuNet, photo default, classifier {path}", p) for path, p in others.items()]
    if args.compare_stock:
        configurations += [
            ("stock YuNet, 3 passes + mirrored (old photo default)", MaskDetector.from_options(
                Options.photo(face_model="stock", extra_scales=STOCK_PHOTO_EXTRA_SCALES, mirror_extra_passes=True))),
            ("stock YuNet, 1 pass", MaskDetector.from_options(Options.photo(face_model="stock", extra_scales=()))),
        ]
    for name, pipeline in configurations:
        for n, frame in frames.items():
            found = len(pipeline.detect_array(frame))
            detect_only = timed(lambda frame=frame, p=pipeline: p.faces.detect(frame), args.repeats)
            whole = timed(lambda frame=frame, p=pipeline: p.detect_array(frame), args.repeats)
            label = f"640x480 frame, {n} face(s) pasted ({found} found), {name}"
            print(f"{label}: face stage only | {detect_only:.1f}")
            print(f"{label}: whole pipeline | {whole:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
