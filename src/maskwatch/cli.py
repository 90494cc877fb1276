"""The ``maskwatch`` command: detect, train, and the tools around them."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from maskwatch.faces import detector_names
from maskwatch.images import DEFAULT_MAX_PIXELS


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (``inf`` and ``nan`` are refused)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def unfreeze_option(text: str) -> str:
    """argparse type: "0", a number of top blocks, "all", or a comma list of them (for tune)."""
    from maskwatch.training.finetune import parse_unfreeze

    try:
        return ",".join(parse_unfreeze(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that runs the models shares (detect, watch, serve)."""
    group = parser.add_argument_group("models")
    group.add_argument("--detector", default="yunet", choices=detector_names(), help="face detector")
    group.add_argument("--face-model", metavar="PATH",
                       help="YuNet ONNX file (default: $MASKWATCH_FACE_MODEL, the cache, or a verified download)")
    group.add_argument("--face-threshold", type=float, metavar="SCORE",
                       help="minimum face score (default: the detector's measured default)")
    group.add_argument("--extra-scales", default=None, metavar="LIST",
                       help="extra YuNet passes at these multiples of the base scale, e.g. '2,3' (the photo "
                            "default) or '' for one fast pass")
    group.add_argument("--classifier", metavar="PATH", help="mask classifier ONNX file (default: the shipped one)")
    group.add_argument("--mask-threshold", type=float, default=0.5, metavar="P",
                       help="label a face with_mask when P(with_mask) >= P (default 0.5)")
    group.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                       help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,})")


def build_detector(args: argparse.Namespace):  # -> MaskDetector, imported lazily to keep --help fast
    from maskwatch.pipeline import MaskDetector

    detector = MaskDetector(
        face_detector=args.detector, face_model=args.face_model, classifier=args.classifier,
        face_threshold=args.face_threshold, mask_threshold=args.mask_threshold, max_pixels=args.max_pixels,
    )
    if args.extra_scales is not None and hasattr(detector.faces, "extra_scales"):
        detector.faces.extra_scales = parse_scales(args.extra_scales)
    return detector


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(f"--extra-scales takes numbers separated by commas, not {text!r}") from None
    if any(scale <= 1.0 or scale > 8.0 for scale in scales):
        raise ValueError(f"--extra-scales must be between 1 and 8: {text!r}")
    return scales


def cmd_detect(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from maskwatch.inputs import expand_inputs
    from maskwatch.model_files import ModelFileError
    from maskwatch.outputs import draw_results

    try:
        detector = build_detector(args)
    except (ModelFileError, FileNotFoundError, ValueError) as exc:
        print(f"maskwatch: {exc}", file=sys.stderr)
        return 2
    inputs = expand_inputs(args.paths)
    out_dir = Path(args.out) if args.out else None
    failed = 0
    sink_context = open(args.json, "w", encoding="utf-8") if args.json else contextlib.nullcontext(sys.stdout)  # noqa: SIM115
    with sink_context as sink:
        for path, name in tqdm(inputs, desc="detect", unit="img", disable=len(inputs) < 2 or args.quiet,
                               file=sys.stderr):
            result, image = detector.analyze(path, name=str(path))
            if image is not None and out_dir is not None:
                target = (out_dir / name).with_suffix(".jpg" if args.out_format == "jpg" else ".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target), draw_results(image, result.faces)):
                    result.error = f"could not write annotated image to {target}"
            failed += not result.ok
            print(result.to_json(), file=sink, flush=True)
    if failed:
        print(f"maskwatch: {failed} of {len(inputs)} inputs failed (see their \"error\")", file=sys.stderr)
    return 1 if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    from maskwatch.model_files import ModelFileError

    try:
        from maskwatch.training.train import TrainConfig, train
        from maskwatch.training.tune import tune
    except ImportError as exc:
        print(f"maskwatch: training needs the train extra (pip install -e '.[train]'): {exc}", file=sys.stderr)
        return 2

    if args.preset == "paper":
        # The paper: Keras ResNet50V2 (ImageNet, frozen) at 224 px, Flatten -> Dense(1024) -> Dropout -> Dense(2).
        # Its output is a sigmoid per class, as the paper had.
        args.backbone, args.head, args.input_size, args.hidden, args.dropout = "resnet50v2", "paper", 224, 1024, 0.5
        args.views = min(args.views, 2)  # each view is a 100,352-value feature map: bound the cache
    config = TrainConfig(
        data_dir=args.data_dir, out_dir=args.out, backbone=args.backbone, input_size=args.input_size,
        seed=args.seed, views=args.views, hidden=args.hidden, dropout=args.dropout, lr=args.lr,
        weight_decay=args.weight_decay, patience=args.patience, face_model=args.face_model,
        cache_dir=args.cache, limit=args.limit, near_duplicates=args.near_duplicates, occlusion=args.occlusion,
        painted_views=args.painted_views, head=args.head, backbone_weights=args.backbone_weights,
        unfreeze=args.unfreeze, finetune_lr=args.finetune_lr, finetune_epochs=args.finetune_epochs,
    )
    if args.command == "train" and "," in args.unfreeze:
        print("maskwatch: train takes one --unfreeze value; tune takes a list", file=sys.stderr)
        return 2
    try:
        report = tune(config, trials=args.trials, seed=args.seed) if args.command == "tune" else train(config)
    except (ValueError, ImportError, ModelFileError) as exc:  # unknown backbone, missing weights package or file
        print(f"maskwatch: {exc}", file=sys.stderr)
        return 2
    test = report["test"]
    print(f"test accuracy {test['accuracy']:.4f} on {test['n']} images; "
          f"by face size: " + ", ".join(f"{px}px {r['accuracy']:.3f}" for px, r in report["test_by_face_px"].items()))
    print(f"model: {report['model']}  report: {Path(args.out) / 'report.json'}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskwatch", description="Find faces and tell who wears a mask.")
    sub = parser.add_subparsers(dest="command", required=True)

    detect = sub.add_parser("detect", help="detect faces and masks in photos",
                            description="Print one JSON line per input; optionally write annotated copies.")
    detect.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or globs")
    detect.add_argument("--out", metavar="DIR", help="write annotated copies here")
    detect.add_argument("--out-format", choices=["jpg", "png"], default="jpg")
    detect.add_argument("--json", metavar="FILE", help="write the JSON lines here instead of stdout")
    detect.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(detect)
    detect.set_defaults(func=cmd_detect)

    train = sub.add_parser("train", help="train a mask classifier on class-per-folder images")
    add_train_options(train)
    train.set_defaults(func=cmd_train)
    tune = sub.add_parser("tune", help="search the head's hyperparameters on the validation split, then train")
    add_train_options(tune)
    tune.add_argument("--trials", type=int, default=12, help="trials to run (default 12)")
    # tune also chooses how deep to fine-tune (train keeps the paper's frozen backbone unless told otherwise):
    # it is the slow, thorough command.
    tune.set_defaults(unfreeze="0,2,all")
    tune.set_defaults(func=cmd_train)

    # Commands that live beside their subsystem; each module has add_command(subparsers) and imports
    # its heavy dependencies (FastAPI, matplotlib) only when its command runs.
    for module in ("maskwatch.video.cli", "maskwatch.web.cli", "maskwatch.evaluation.cli"):
        importlib.import_module(module).add_command(sub)
    return parser


def add_train_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("data_dir", help="folder with one sub-folder of images per class")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder for the model and reports")
    train.add_argument("--preset", choices=["paper"],
                       help="paper: the published ResNet50V2 + Flatten/Dense(1024) head (needs Keras' ImageNet file)")
    train.add_argument("--backbone", default="efficientnet_lite0",
                       help="ImageNet backbone from the registry: efficientnet_lite0 (default), efficientnet_lite1, "
                            "efficientnet_lite2 (each needs its weights package), resnet50v2")
    train.add_argument("--backbone-weights", metavar="PATH",
                       help="pretrained weights file for the backbone (resnet50v2: Keras' notop .h5)")
    train.add_argument("--head", default="gap", choices=["gap", "paper"],
                       help="gap: pooled features -> Dense -> Dropout -> Dense (default); paper: Flatten head")
    train.add_argument("--input-size", type=int, default=0, help="crop size (default: the backbone's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--views", type=int, default=8, help="augmented views per training image")
    train.add_argument("--hidden", type=int, default=256)
    train.add_argument("--dropout", type=float, default=0.3)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs")
    train.add_argument("--face-model", metavar="PATH")
    train.add_argument("--cache", metavar="DIR", help="crop and feature cache (default: the user cache)")
    train.add_argument("--limit", type=int, default=0, help="use at most N images per class")
    train.add_argument("--no-near-duplicates", dest="near_duplicates", action="store_false",
                       help="group only byte-identical files, not near-duplicate crops, into one split")
    train.add_argument("--no-occlusion", dest="occlusion", action="store_false",
                       help="no hands over bare mouths as hard negatives")
    train.add_argument("--unfreeze", default="0", type=unfreeze_option, metavar="N|all",
                       help="phase 2: fine-tune the top N blocks of the backbone (or all) with the head, end to end; "
                            "0 keeps it frozen as the paper did (train's default). tune takes a list and chooses "
                            "on validation loss (tune's default: 0,2,all)")
    train.add_argument("--finetune-lr", type=positive_float, default=1e-5, help="phase 2 learning rate (default 1e-5)")
    train.add_argument("--finetune-epochs", type=positive_int, default=8, help="phase 2 epochs at most")
    train.add_argument("--painted-views", type=non_negative_int, default=0, metavar="N",
                       help="views of each bare training face with a painted black, coloured or patterned mask, "
                            "labelled with_mask (default 0: measured, they did not help on real masks)")


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
