"""``maskwatch train-detector``: fine-tune YuNet on faces from real scenes, export it, measure it on val."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from maskwatch.cli.common import decay, non_negative_int, positive_float, positive_int, probability

# The photo defaults a trained model is measured with: one pass, or one more at twice the scale.
PASS_CANDIDATES: tuple[tuple[float, ...], ...] = ((), (2.0,))


def add_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train-detector", help="fine-tune the YuNet face detector on VOC scene sets (masked faces too)",
        description="Fine-tune YuNet from the stock 2023mar weights on every annotated face of VOC scene sets "
                    "(each set's manifest.csv gives the train and val split; every class is a face). Writes "
                    "face_detector.onnx (loads in cv2.FaceDetectorYN and in --face-model), detector.pt, "
                    "detector_report.json and val figures (detector_val.md) into --out.",
    )
    parser.add_argument("data", nargs="+", metavar="SCENES_DIR", help="VOC scene sets with a manifest split")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder to write")
    parser.add_argument("--base-model", metavar="FILE",
                        help="the stock YuNet ONNX to start from (default: $MASKWATCH_FACE_MODEL, the cache, or "
                             "a verified download)")
    parser.add_argument("--epochs", type=positive_int, default=16)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--lr", type=positive_float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--freeze", type=non_negative_int, default=4,
                        help="keep the first N convolutions at the stock weights (default 4)")
    parser.add_argument("--crop-size", type=positive_int, default=480, help="training view side, px (x32)")
    parser.add_argument("--patience", type=positive_int, default=5,
                        help="stop after this many epochs without a better val face AP (default 5)")
    parser.add_argument("--no-distill", dest="distill_landmarks", action="store_false",
                        help="do not teach landmarks from the stock model where the data has none")
    parser.add_argument("--distill", type=float, default=0.0, metavar="WEIGHT",
                        help="keep scores and boxes near the stock model's wherever it sees a face (default 0)")
    parser.add_argument("--keep-stock-faces", action="store_true",
                        help="no background loss where the stock model is sure of a face nobody boxed (measured: "
                             "lower val AP, so off by default; MODEL_CARD.md)")
    parser.add_argument("--align-boxes", action="store_true",
                        help="move every source's training boxes into the style of the source with the most faces "
                             "(measured against the stock model on train); off by default: measured, it found "
                             "fewer faces on val (MODEL_CARD.md)")
    parser.add_argument("--paste-faces", action="append", default=[], metavar="FOLDERS_DIR",
                        help="a class-per-folder set (e.g. ../shared/datasets/face-mask) whose train-split faces are "
                             "pasted into training views at 10-80 px; repeatable")
    parser.add_argument("--paste-probability", type=probability, metavar="P",
                        help="share of training views that get pasted faces (default 0.5)")
    parser.add_argument("--decoys", type=non_negative_int, metavar="N",
                        help="with --paste-faces, also paste up to N face-free patches of the view the same way, "
                             "not boxed, so a pasted edge is no sign of a face (default 0)")
    parser.add_argument("--ema", type=decay, metavar="DECAY",
                        help="validate and export a moving average of the weights with this decay (e.g. 0.998; "
                             "default: off, the last step's weights)")
    parser.add_argument("--limit", type=positive_int,
                        help="only the first N training images and N/4 val images (quick checks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, help="PyTorch threads (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=cmd_train_detector)


def _val_ap(scenes: str, limit: int | None):  # -> Callable[[Path], float]
    """Face AP@0.5 on the val photos of ``scenes`` (one pass, as exported): how train-detector picks its epoch."""
    from maskwatch.evaluation.detector import evaluate_detector
    from maskwatch.faces.yunet import YuNetDetector

    def score(model: Path) -> float:
        result = evaluate_detector(scenes, YuNetDetector(model, extra_scales=(), score_threshold=0.2),
                                   split="val", limit=limit)
        return float(result["face_ap50"] or 0.0)

    return score


def choose_photo_defaults(model: Path, data: Sequence[str], base: Path, quiet: bool = False,
                          limit: int | None = None) -> tuple[dict, tuple[tuple[float, ...], float]]:
    """Measure the face model file ``model`` the way users run it (through cv2.FaceDetectorYN) on the val
    split of each scene set in ``data``, and choose its photo defaults (passes, score threshold) on the first.

    Returns the val figures at the chosen defaults, per set, and the defaults; appends the tables to
    detector_val.md beside the model. The command composes training and evaluation: neither package
    imports the other.
    """
    from maskwatch.evaluation.detector import (
        SWEEP_THRESHOLDS,
        choose_face_defaults,
        evaluate_detector,
        sweep_markdown,
        sweep_thresholds,
    )
    from maskwatch.faces.yunet import OWN_EXTRA_PASSES, YuNetDetector

    figures: dict = {}
    chosen = None
    stock = evaluate_detector(data[0], YuNetDetector(base, extra_scales=()), split="val", limit=limit)
    budget = stock["false_faces_per_image"] or 0.0
    for root in data:
        sweeps = {scales: sweep_thresholds(root, YuNetDetector(model, extra_scales=scales, **OWN_EXTRA_PASSES),
                                           list(SWEEP_THRESHOLDS), split="val", progress=not quiet, limit=limit)
                  for scales in PASS_CANDIDATES}
        chosen = chosen or choose_face_defaults(sweeps, budget)
        scales, threshold = chosen
        picked = next(r for r in sweeps[scales] if r["score_threshold"] == threshold)
        figures[Path(root).name] = {k: picked[k] for k in ("images", "faces", "recall", "false_faces_per_image",
                                                           "face_ap50", "min_face", "score_threshold")}
        text = (f"## {root}, split val\n\n{sweep_markdown(sweeps)}\nChosen: extra passes "
                f"{list(scales) or 'none'}, face score threshold {threshold:g} (the lowest within the stock "
                f"model's {budget:.2f} false faces per image, one pass at 0.5).\n")
        print(text)
        with open(model.parent / "detector_val.md", "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    assert chosen is not None
    return figures, chosen


def photo_defaults_metadata(chosen: tuple[tuple[float, ...], float]) -> dict[str, str]:
    """The metadata entries that make ``chosen`` (extra passes, score threshold) a face model's defaults."""
    from maskwatch.faces import yunet

    scales, threshold = chosen
    return {yunet.METADATA_SCORE_THRESHOLD: f"{threshold:g}", yunet.METADATA_EXTRA_SCALES: json.dumps(list(scales)),
            yunet.METADATA_MIRROR_EXTRA_PASSES: json.dumps(yunet.OWN_EXTRA_PASSES["mirror_extra_passes"]),
            yunet.METADATA_EXTRA_PASS_MAX_FACE: f"{yunet.OWN_EXTRA_PASSES['extra_pass_max_face']:g}"}


def cmd_train_detector(args: argparse.Namespace) -> int:
    from maskwatch.faces.yunet import YUNET
    from maskwatch.model_files import ModelFileError, resolve

    if args.crop_size % 32:
        print("maskwatch: --crop-size must be a multiple of 32", file=sys.stderr)
        return 2
    try:
        from maskwatch.training.detector.train import DETECTOR_FILE, DetectorConfig, detector_metadata, train_detector
        from maskwatch.training.detector.yunet_net import YuNetNet
    except ImportError as exc:
        print(f"maskwatch: training needs the train extra (pip install -e '.[train]'): {exc}", file=sys.stderr)
        return 2
    try:
        base = resolve(YUNET, args.base_model)
        config = DetectorConfig(
            data=args.data, out=args.out, base_model=str(base), epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, weight_decay=args.weight_decay, freeze=args.freeze, crop_size=args.crop_size,
            patience=args.patience, distill_landmarks=args.distill_landmarks,
            keep_stock_faces=args.keep_stock_faces, distill=args.distill, align_boxes=args.align_boxes,
            paste_from=args.paste_faces,
            **({} if args.paste_probability is None else {"paste_probability": args.paste_probability}),
            **({} if args.ema is None else {"ema": args.ema}),
            **({} if args.decoys is None else {"decoys": args.decoys}),
            limit=args.limit, seed=args.seed,
            threads=args.threads,
        )
        report = train_detector(config, progress=not args.quiet, validate=_val_ap(args.data[0], config.val_limit))
    except (ValueError, OSError, ModelFileError) as exc:
        print(f"maskwatch: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    model = out / DETECTOR_FILE
    figures, chosen = choose_photo_defaults(model, args.data, base, quiet=args.quiet, limit=config.val_limit)
    net = YuNetNet.from_onnx(model)
    net.to_onnx(model, model, detector_metadata(report, figures) | photo_defaults_metadata(chosen))
    report["val_figures"] = figures
    (out / "detector_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"model: {model}  (val loss {report['start_val_loss']:.4f} -> {report['best_val_loss']:.4f}, "
          f"best epoch {report['best_epoch']})")
    return 0
