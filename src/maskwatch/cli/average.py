"""``maskwatch average``: the mean of several fine-tuned mask classifiers' weights, as one model (a model soup)."""

from __future__ import annotations

import argparse
import sys

from maskwatch.cli.common import probability

EXIT_OK, EXIT_UNUSABLE = 0, 2


def add_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "average", help="average the weights of models fine-tuned from one start (a model soup)",
        description="Average the weights of mask classifiers (ONNX files or `maskwatch train` run folders) that "
                    "were fine-tuned from the same pretrained backbone with the same labels, head and crop; "
                    "the first model's network and input size are kept. The operating point is chosen again "
                    "on the annotated faces of --scenes (training's rule). Writes mask_classifier.onnx and "
                    "average.json into --out; when the first model is a run folder, also its split and the "
                    "test figures on it, so that `maskwatch evaluate OUT` works. "
                    "Face models too: when the first model is one that `maskwatch train-detector` wrote, the "
                    "others are face models of the same network ('stock' names OpenCV Zoo's YuNet, e.g. "
                    "`maskwatch average runs/detector-v7 stock --weights 0.7 0.3`); the photo defaults are "
                    "chosen again on the val photos of --scenes (train-detector's rule) and "
                    "face_detector.onnx, detector_val.md and average.json are written into --out.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="ONNX files or run folders (two or more); for face models, 'stock' too")
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
        from maskwatch.training.detector.average import is_face_detector
    except ImportError as exc:
        print(f"maskwatch average needs the train extra (pip install 'maskwatch[train]'): {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if is_face_detector(args.models[0]):
        return cmd_average_detectors(args)
    from maskwatch.faces.yunet import STOCK_MODEL_NAMES

    if any(m in STOCK_MODEL_NAMES for m in args.models):  # (a face model elsewhere fails the classifier checks)
        print("maskwatch: to average face models, put first one that `maskwatch train-detector` wrote (its graph "
              "and training facts are kept), e.g. `maskwatch average runs/detector stock ...`", file=sys.stderr)
        return EXIT_UNUSABLE
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


def cmd_average_detectors(args: argparse.Namespace) -> int:
    """``maskwatch average`` of face models: the weights' mean, its photo defaults chosen on --scenes val.

    The mean is measured from a scratch folder; --out gets the model, its tables and average.json only once
    the photo defaults are chosen, so a failure leaves --out as it was.
    """
    import json
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from maskwatch.cli.train_detector import choose_photo_defaults, photo_defaults_metadata
    from maskwatch.faces.yunet import FACE_MODEL_FILE_NAME, STOCK_MODEL_NAMES, YUNET
    from maskwatch.model_files import ModelFileError, atomic_file, resolve, sha256_of
    from maskwatch.training.average import equal_weights
    from maskwatch.training.detector.average import average_detectors, detector_file, save_detector, write_metadata

    if args.split != "val":
        print("maskwatch: face models are averaged on the val split of --scenes (train-detector's rule); "
              f"--split {args.split} is for classifiers", file=sys.stderr)
        return EXIT_UNUSABLE
    out = Path(args.out)
    try:
        equal_weights(len(args.models), args.weights)  # the cheap checks first
        if not Path(args.scenes).is_dir():
            raise FileNotFoundError(f"--scenes {args.scenes}: no such folder")
        # The models may name it, and its one pass sets the false-face budget; this command has no --face-model.
        stock = resolve(replace(YUNET, option=""))
        paths = [stock if m in STOCK_MODEL_NAMES else detector_file(m) for m in args.models]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"no model file {path}")
        if (out / FACE_MODEL_FILE_NAME).resolve() in {p.resolve() for p in paths}:
            raise ValueError(f"--out {out} holds a model being averaged: choose a new folder")
        proto = average_detectors(paths, args.models, args.weights)
        with tempfile.TemporaryDirectory() as scratch:
            draft = save_detector(proto, scratch)
            figures, chosen = choose_photo_defaults(draft, [args.scenes], stock)
            tables = (Path(scratch) / "detector_val.md").read_text(encoding="utf-8")
    except (FileNotFoundError, ValueError, OSError, ModelFileError) as exc:
        print(f"maskwatch: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    metadata = {p.key: p.value for p in proto.metadata_props}
    metadata |= {"maskwatch.val_figures": json.dumps(figures)} | photo_defaults_metadata(chosen)
    write_metadata(proto, metadata)
    model = save_detector(proto, out)
    with atomic_file(out / "detector_val.md") as handle:
        handle.write(tables.encode())
    report = {"model": str(model), "sha256": sha256_of(model), "metadata": metadata}
    with atomic_file(out / "average.json") as handle:
        handle.write(json.dumps(report, indent=2).encode())
    scales, threshold = chosen
    print(f"wrote {model}, sha256 {report['sha256']}")
    print(f"photo defaults: extra passes {list(scales) or 'none'}, face score threshold {threshold:g}")
    return EXIT_OK
