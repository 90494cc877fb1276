"""Face models side by side on a VOC scene set: recall by class and size, false faces, face AP, time.

    python benchmarks/face_models.py ../shared/datasets/mask-scenes [--split val] [--min-face 16] [--iou 0.5]

Rows: the stock YuNet (OpenCV Zoo 2023mar) with its old photo default (1x, 2x and 3x passes, the enlarged
ones also mirrored) and with one pass, then maskwatch's shipped model with one pass and with a 2x pass more
(the way its file says: not mirrored, faces up to 48 px; and the stock model's way, for comparison).
Every detector runs on the same photos in one process, so the times compare (this machine is noisy).
``--face-model FILE`` adds a row for another model (e.g. a new ``train-detector`` run), ``--detector NAME`` two
rows for another detector of the registry (e.g. ``retinaface``): one pass, and one pass more at 2x;
``--extra-pass-max-face PX`` a row for the shipped model's 2x pass adding faces up to PX px (how 48 was chosen).
"""

from __future__ import annotations

import argparse
import sys

from maskwatch.evaluation.common import fmt, markdown_table
from maskwatch.evaluation.detector import SIZE_GROUPS, evaluate_detector
from maskwatch.evaluation.scenes import IOU_THRESHOLD
from maskwatch.faces import create_detector
from maskwatch.faces.yunet import STOCK_EXTRA_PASSES, STOCK_PHOTO_EXTRA_SCALES, YuNetDetector

CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenes")
    parser.add_argument("--split", default="val")
    parser.add_argument("--min-face", type=float, default=16.0)
    parser.add_argument("--iou", type=float, default=IOU_THRESHOLD,
                        help="overlap that finds a face (lower: how many misses are boxes drawn in another style)")
    parser.add_argument("--face-model", action="append", default=[], help="another model file (repeatable)")
    parser.add_argument("--detector", action="append", default=[], help="another detector by name (repeatable)")
    parser.add_argument("--extra-pass-max-face", type=float, action="append", default=[],
                        help="a row for the shipped model's 2x pass (not mirrored) adding faces up to PX (repeatable)")
    args = parser.parse_args()
    if any(not px > 0 for px in args.extra_pass_max_face):
        parser.error("--extra-pass-max-face: a positive number of pixels")
    shipped = YuNetDetector()
    rows = [
        ("stock, 3 passes + mirrored (old photo default)",
         YuNetDetector("stock", extra_scales=STOCK_PHOTO_EXTRA_SCALES)),
        ("stock, 1 pass", YuNetDetector("stock", extra_scales=())),
        (f"maskwatch, photo default ({len(shipped.extra_scales) + 1} pass, threshold {shipped.score_threshold:g})",
         shipped),
        ("maskwatch, + a 2x pass", YuNetDetector(extra_scales=(2.0,))),
        ("maskwatch, + a 2x pass the stock model's way (mirrored, faces up to 128 px)",
         YuNetDetector(extra_scales=(2.0,), **STOCK_EXTRA_PASSES)),
        *((f"maskwatch, + a 2x pass adding faces up to {px:g} px", YuNetDetector(extra_scales=(2.0,),
                                                                                  extra_pass_max_face=px))
          for px in args.extra_pass_max_face),
        *((f"{path}, 1 pass", YuNetDetector(path, extra_scales=())) for path in args.face_model),
        *((f"{name}, {label}", create_detector(name, extra_scales=scales)) for name in args.detector
          for label, scales in (("1 pass", ()), ("+ a 2x pass", (2.0,)))),
    ]
    groups = [g for *_, g in SIZE_GROUPS]
    table, by_source = [], []
    for name, detector in rows:
        result = evaluate_detector(args.scenes, detector, min_face=args.min_face, split=args.split,
                                   iou_threshold=args.iou)
        recall = result["recall"]
        table.append([name, *(fmt(recall[c][g]["recall"]) if c in recall else "-" for c in CLASSES for g in groups),
                      fmt(result["false_faces_per_image"], 2), fmt(result["face_ap50"]),
                      fmt(result["ms_per_image"], 1)])
        for source, cells in result.get("recall_by_source", {}).items():
            by_source.append([name, source, *(fmt(cells[c]["all"]["recall"]) if c in cells else "-" for c in CLASSES)])
        print(f"done: {name}", file=sys.stderr)
    headers = ["face model", *(f"{c} {g}" for c in CLASSES for g in groups), "false faces / image",
               f"face AP@{args.iou:g}", "ms / image"]
    print(f"{args.scenes}, split {args.split}, faces of {args.min_face:g} px and up (recall: IoU >= {args.iou:g})\n")
    print(markdown_table(headers, table))
    if by_source:  # the sources box faces in their own styles (training/detector/box_style.py)
        print(f"\nRecall by source, faces of {args.min_face:g} px and up\n")
        print(markdown_table(["face model", "source", *CLASSES], by_source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
