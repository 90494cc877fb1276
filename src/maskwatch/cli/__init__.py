"""The ``maskwatch`` command: one module per command, on top of the library (which never imports them)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from maskwatch.cli import average, batch, detect, evaluate, serve, train, train_detector, watch

COMMANDS = (detect, train, average, train_detector, watch, serve, evaluate, batch)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskwatch", description="Find faces and tell who wears a mask.")
    sub = parser.add_subparsers(dest="command", required=True)
    # Each command module has add_command(subparsers) and imports its heavy dependencies (FastAPI,
    # matplotlib, PyTorch) only when its command runs, so --help stays fast.
    for command in COMMANDS:
        command.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return args.func(args)

