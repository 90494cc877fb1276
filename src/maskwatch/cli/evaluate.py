"""``maskwatch evaluate``: a training run's test split, a folder of face photos, or annotated scenes."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from maskwatch.cli.common import add_model_options, non_negative_float

# Exit codes: 0 done, 2 nothing could be evaluated (bad folder, model, labels or options).
EXIT_OK, EXIT_UNUSABLE = 0, 2


def add_command(sub: argparse._SubParsersAction) -> None:

    evaluate = sub.add_parser(
        "evaluate", help="measure a model: a training run's test split, face photos, or annotated scenes",
        description="RUN_DIR: re-score the run's test split with its ONNX model and write evaluation.md, "
                    "evaluation.json and plots into the run folder. --faces DIR: class-per-folder face photos "
                    "through the whole pipeline. --scenes DIR: scenes with PASCAL VOC XML annotations.",
    )
    evaluate.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a folder written by `maskwatch train`")
    what = evaluate.add_mutually_exclusive_group()
    what.add_argument("--faces", metavar="DIR", help="one sub-folder of face photos per label (folder = label)")
    what.add_argument("--scenes", metavar="DIR",
                      help="images with VOC .xml files beside them, or in annotations/ next to images/")
    evaluate.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    run = evaluate.add_argument_group("RUN_DIR")
    run.add_argument("--calibrate", action="store_true",
                     help="write mask_classifier.calibrated.onnx with the temperature fitted on the validation split")
    run.add_argument("--data-dir", metavar="DIR", help="the training data, if it moved since training")
    run.add_argument("--cache", metavar="DIR", help="the crop cache, if not the one training used")
    sets = evaluate.add_argument_group("--faces / --scenes")
    sets.add_argument("--map-label", action="append", default=[], metavar="NAME=LABEL",
                      help="count annotated class (or folder) NAME as LABEL, or NAME=ignore (repeatable); "
                           "by default a class the model has counts as itself, and mask_weared_incorrect as "
                           "incorrect_mask (as without_mask for a two-class model or with --two-class)")
    sets.add_argument("--min-face", type=non_negative_float, default=0.0, metavar="PX",
                      help="--scenes: ignore annotated faces less than PX high (neither missed nor false)")
    sets.add_argument("--split", metavar="NAME",
                      help="--scenes: only the images that the set's manifest.csv puts in this split (e.g. val)")
    sets.add_argument("--faces-only", action="store_true",
                      help="--scenes: the face detector alone (every annotated class is a face): recall by class "
                           "and size, false faces, face AP@0.5, ms per image; no classifier runs")
    sets.add_argument("--out", metavar="DIR",
                      help="--scenes: also write scenes.md, scenes.json and a contact sheet of the mislabelled "
                           "faces into DIR (a run folder: never commit pictures of the data)")
    add_model_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)




def cmd_evaluate(args: argparse.Namespace) -> int:
    from maskwatch.model_files import ModelFileError

    if sum(bool(x) for x in (args.run_dir, args.faces, args.scenes)) != 1:
        print("maskwatch evaluate: give exactly one of RUN_DIR, --faces DIR or --scenes DIR", file=sys.stderr)
        return EXIT_UNUSABLE
    json_out = None
    json_is_new = written = False  # a --json file this command made is removed again if nothing is written
    if args.json:  # opened before the long evaluation, so that a bad path fails at once
        try:
            json_out, json_is_new = _open_json_output(Path(args.json))
        except OSError as exc:
            print(f"maskwatch: cannot write --json {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_UNUSABLE
    try:
        try:
            result, text = _run_dir(args) if args.run_dir else _data_set(args)
        except (ModelFileError, FileNotFoundError, ValueError, OSError) as exc:
            print(f"maskwatch: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE
        print(text, end="")
        if json_out is not None:
            from maskwatch.evaluation.run_report import dumps_json

            try:
                json_out.seek(0)
                json_out.truncate()
                json_out.write(dumps_json(result))
                json_out.flush()
                written = True
            except OSError as exc:
                print(f"maskwatch: cannot write --json {args.json}: {exc.strerror or exc}", file=sys.stderr)
                return EXIT_UNUSABLE
        return EXIT_OK
    finally:
        if json_out is not None:
            with contextlib.suppress(OSError):
                json_out.close()
            if json_is_new and not written:
                with contextlib.suppress(OSError):
                    Path(args.json).unlink()


def _open_json_output(path: Path):  # -> tuple[TextIO, bool]
    """Open ``path`` for writing without emptying it yet (that waits for the results), and whether this made
    the file; OSError if we cannot."""
    try:
        return open(path, "x", encoding="utf-8"), True  # noqa: SIM115 - closed by cmd_evaluate
    except FileExistsError:  # (a link to nowhere too: it is the user's, and is not followed to make a file)
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory") from None
        return open(path, "a+", encoding="utf-8"), False  # noqa: SIM115


def _run_dir(args: argparse.Namespace) -> tuple[dict, str]:
    from maskwatch.evaluation.run_report import write_evaluation

    if args.classifier or args.map_label or args.min_face or args.face_threshold is not None:
        raise ValueError("RUN_DIR evaluates the run's own model on its own crops: --classifier, --face-threshold, "
                         "--map-label and --min-face are for --faces / --scenes")
    result = write_evaluation(args.run_dir, data_dir=args.data_dir, cache_dir=args.cache,
                              face_model=args.face_model, calibrate=args.calibrate)
    run, test = Path(args.run_dir), result["test"]
    lines = [f"test accuracy {test['accuracy']:.4f} on {test['n']} images, ROC AUC {_num(test['roc_auc'])}, "
             f"ECE {test['ece']:.4f}; " + ", ".join(f"{px}px {r['accuracy']:.3f}"
                                                   for px, r in result["test_by_face_px"].items()),
             f"two classes at the operating point (the paper's protocol): {_num(result['test_two_class_accuracy'])}",
             "two classes by mask cut: " + ", ".join(f"{cut} {_num(v)}" for cut, v in
                                                     result["test_two_class_by_mask_threshold"].items())]
    calibration = result.get("calibration")
    if calibration:
        lines.append(f"temperature {calibration['temperature']:.3f}: test ECE {calibration['test_ece_before']:.4f}"
                     f" -> {calibration['test_ece_after']:.4f}" + ("" if calibration["usable"] else " (not usable)"))
    if args.calibrate:
        written = result.get("calibrated_model")
        lines.append(f"calibrated model: {written['path']}" if written else
                     "calibrated model: not written (no usable temperature; see evaluation.md)")
    lines.append(f"report: {run / 'evaluation.md'}  figures: {', '.join(result['plots'].values())}")
    return result, "\n".join(lines) + "\n"


def _data_set(args: argparse.Namespace) -> tuple[dict, str]:
    from maskwatch.cli.common import build_detector
    from maskwatch.evaluation.common import parse_label_map

    if args.calibrate or args.data_dir or args.cache:
        raise ValueError("--calibrate, --data-dir and --cache are for RUN_DIR")
    progress = not args.quiet
    if args.faces_only:
        if not args.scenes or args.map_label or args.out:
            raise ValueError("--faces-only goes with --scenes, without --map-label or --out")
        from maskwatch.cli.common import options_from_args
        from maskwatch.evaluation.detector import detector_markdown, evaluate_detector
        from maskwatch.faces import create_detector

        options = options_from_args(args)
        faces = create_detector(options.detector, **options.detector_settings())
        result = evaluate_detector(Path(args.scenes), faces, min_face=args.min_face, split=args.split,
                                   progress=progress)
        name = getattr(faces, "model_path", options.detector)
        return result, detector_markdown(result, f"Face detector {name}, split {args.split or 'all'}")
    detector = build_detector(args)
    mapping = parse_label_map(args.map_label, detector.labels)
    if args.faces:
        from maskwatch.evaluation.faces import evaluate_faces, faces_markdown

        if args.min_face:
            raise ValueError("--min-face is for --scenes")
        result = evaluate_faces(Path(args.faces), detector, mapping, progress=progress)
        return result, faces_markdown(result)
    from maskwatch.evaluation.scenes import evaluate_scenes, scenes_markdown

    result = evaluate_scenes(Path(args.scenes), detector, mapping, min_face=args.min_face, progress=progress,
                             split=args.split, out=args.out)
    return result, scenes_markdown(result)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
