"""``maskwatch detect``: faces and masks in photos, one JSON line per input."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maskwatch.cli.common import add_model_options, build_detector


def add_command(sub: argparse._SubParsersAction) -> None:
    detect = sub.add_parser("detect", help="detect faces and masks in photos",
                            description="Print one JSON line per input; optionally write annotated copies.")
    detect.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or globs")
    detect.add_argument("--out", metavar="DIR", help="write annotated copies here")
    detect.add_argument("--out-format", choices=["jpg", "png"], default="jpg")
    detect.add_argument("--json", metavar="FILE", help="write the JSON lines here instead of stdout")
    detect.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(detect)
    detect.set_defaults(func=cmd_detect)


def cmd_detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from maskwatch.inputs import find_inputs
    from maskwatch.model_files import describe_load_error, model_load_errors

    problem = check_outputs(args)  # before the models load: a typo in an output path costs nothing
    if problem:
        print(f"maskwatch: {problem}", file=sys.stderr)
        return 2
    try:
        detector = build_detector(args)
    except model_load_errors() as exc:
        print(f"maskwatch: cannot load the models: {describe_load_error(exc)}", file=sys.stderr)
        return 2
    inputs = find_inputs(args.paths)
    annotated = AnnotatedCopies(Path(args.out), args.out_format, [i.path for i in inputs]) if args.out else None
    failed = done = 0
    try:
        sink_context = open(args.json, "w", encoding="utf-8") if args.json else contextlib.nullcontext(sys.stdout)  # noqa: SIM115
    except OSError as exc:
        print(f"maskwatch: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        with sink_context as sink:
            for found in tqdm(inputs, desc="detect", unit="img", disable=len(inputs) < 2 or args.quiet,
                              file=sys.stderr):
                result = analyse_one(detector, found, annotated, note=tqdm.write)
                failed += not result.ok
                print(result.to_json(), file=sink, flush=True)
                done += 1
    except BrokenPipeError:
        # `maskwatch detect ... | head`: the reader has gone. Stop quietly, and keep Python from
        # failing again when it flushes stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"maskwatch: output closed after {done} of {len(inputs)} results; stopped", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk under --json
        print(f"maskwatch: cannot write results: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if failed:
        print(f"maskwatch: {failed} of {len(inputs)} inputs failed (see their \"error\")", file=sys.stderr)
    return 1 if failed else 0


def check_outputs(args: argparse.Namespace) -> str | None:
    """Why ``--json`` or ``--out`` cannot be written, or None."""
    if args.json:
        target = Path(args.json)
        if target.is_dir():
            return f"--json {args.json} is a folder; give a file name"
        if not target.parent.is_dir():
            return f"--json {args.json}: the folder {target.parent} does not exist"
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            return f"--out {args.out} is a file; give a folder (it is created if missing)"
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"--out {args.out}: cannot create the folder: {exc.strerror or exc}"
    return None


def analyse_one(detector: Any, found: Any, annotated: AnnotatedCopies | None,
                note: Callable[..., Any]) -> Any:  # (MaskDetector, inputs.Input) -> ImageResult
    """One input's result line; the annotated copy is written too, when asked for."""
    from maskwatch.images import ImageError, read_image
    from maskwatch.inputs import EMPTY_PATH_ERROR, printable_name
    from maskwatch.results import ImageResult

    name = "" if found.error == EMPTY_PATH_ERROR else printable_name(found.path)  # Path("") would print "."
    if found.error:
        return ImageResult(file=name, error=found.error)
    try:
        decoded = read_image(found.path, detector.max_pixels)
    except ImageError as exc:
        return ImageResult(file=name, error=str(exc))
    if decoded.frames > 1:
        note(f"maskwatch: {name} holds {decoded.frames} frames; only the first is judged "
             "(use `maskwatch watch` for a video)", file=sys.stderr)
    result, image = detector.analyze(decoded.image, name=name)
    if image is not None and annotated is not None:
        error = annotated.write(found, image, result.faces, note)
        if error:
            result.error = error
    return result


class AnnotatedCopies:
    """Writes the annotated copies under ``folder``: the input's name (its path inside a searched folder),
    with the output format's ending. A copy never overwrites an input of the run (``--out`` the photos' own
    folder) nor another copy (a/x.jpg and b/x.png): it gets -2, -3, ... before its ending, and a note says so."""

    def __init__(self, folder: Path, out_format: str, inputs: list[Path]) -> None:
        self.folder = folder
        self.suffix = ".jpg" if out_format == "jpg" else ".png"
        self.used: set[Path] = set()
        self.inputs = {path.resolve() for path in inputs}

    def taken(self, target: Path) -> str | None:
        """Why ``target`` may not be written, or None."""
        if target in self.used:
            return "another input already wrote"
        return "the run reads the input" if target.resolve() in self.inputs else None

    def write(self, found: Any, image: Any, faces: list, note: Callable[..., Any]) -> str | None:
        """Write one copy; the error for the result line, or None."""
        import cv2

        from maskwatch.inputs import printable_name
        from maskwatch.outputs import draw_results

        wanted = (self.folder / found.name).with_suffix(self.suffix)
        target, number, why = wanted, 1, self.taken(wanted)
        while self.taken(target):
            number += 1
            target = wanted.with_name(f"{wanted.stem}-{number}{self.suffix}")
        self.used.add(target)
        shown = printable_name(target)
        if why:
            note(f"maskwatch: {why} {printable_name(wanted)}; the copy of {printable_name(found.path)} is {shown}",
                 file=sys.stderr)
        ok, encoded = cv2.imencode(self.suffix, draw_results(image, faces))
        if not ok:
            return f"could not encode the annotated image for {shown}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encoded.tobytes())  # Python's open: any file name the system allows
        except OSError as exc:
            return f"could not write annotated image to {shown}: {exc.strerror or exc}"
        return None


