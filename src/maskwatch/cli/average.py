"""``maskwatch average``: the mean of several fine-tuned mask classifiers' weights, as one model (a model soup)."""

from __future__ import annotations

import argparse
import sys

from maskwatch.cli.common import probability

EXIT_OK, EXIT_UNUSABLE = 0, 2


def add_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "average", help="average the weights of mask classifiers fine-tuned from one start (a model soup)",
        description="Average the weights of mask classifiers (ONNX files or `maskwatch train` run folders) that "
                    "were fine-tuned from the same pretrained backbone with the same labels, head and crop; "
                    "the first model's network and input size are kept. The operating point is chosen again "
                    "on the annotated faces of --scenes (training's rule). Writes mask_classifier.onnx and "
                    "average.json into --out; when the first model is a run folder, also its split and the "
                    "test figures on it, so that `maskwatch evaluate OUT` works.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="ONNX files or run folders (two or more)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    parser.add_argument("--scenes", required=True, metavar="DIR",
                        help="a VOC scene set with the model's classes: its faces choose the operating point")
    parser.add_argument("--split", default="val", metavar="NAME",
                        help="the scene set's split to choose on (default val; 'all' for every image)")
    parser.add_argument("--weights", type=probability, nargs="+", metavar="W",
                        help="one weight per model, summing to 1 (default: the plain mean)")
    parser.set_defaults(func=cmd_average)


def cmd_average(args: argparse.Namespace) -> int:
    try:
        from maskwatch.training.average import average_models
    except ImportError as exc:
        print(f"maskwatch average needs the train extra (pip install 'maskwatch[train]'): {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        report = average_models(args.models, args.out, args.scenes, None if args.split == "all" else args.split,
                                args.weights)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"maskwatch: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    meta = report["metadata"]
    point, search = meta["operating_point"], meta["operating_point"]["search"]
    print(f"wrote {report['model']} ({meta['input_size']} px input), sha256 {report['sha256']}")
    print(f"operating point: with_mask at P >= {point['mask_threshold']:g}, incorrect_mask at >= "
          f"{point['incorrect_threshold']:g} of the rest; on {search['faces']} faces: macro F1 "
          f"{search['chosen_macro_f1']:.4f}, balanced accuracy {search['chosen_balanced_accuracy']:.4f}")
    if "test_two_class_accuracy" in meta:
        print(f"test split: {meta['test_photos']} photos no averaged model trained on; accuracy "
              f"{meta['test_accuracy']:.4f}, two classes at the operating point {meta['test_two_class_accuracy']:.4f}")
        for row in meta["test_by_model"][1:]:
            print(f"  {row['model']} on the same photos: accuracy {row['accuracy']:.4f}, two classes at its "
                  f"operating point {row['two_class_accuracy']:.4f}")
    else:
        print(f"test figures: {meta.get('test_figures', 'none')}")
    return EXIT_OK
