"""``maskwatch batch SOURCE... --out DIR``: a large archive of photos and videos, on Ray (the ``batch`` extra)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from maskwatch.cli.common import add_model_options, options_from_args, positive_float, positive_int

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_UNUSABLE, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_command(sub: argparse._SubParsersAction) -> None:
    batch = sub.add_parser(
        "batch", help="photos and videos by the thousand, on a Ray cluster (pip install 'maskwatch[batch]')",
        description="Find faces and masks in folders, globs, list files (one path a line, or @FILE) and videos "
                    "(a frame every --every-seconds), on a local Ray or a cluster. Writes Parquet (or JSON-lines) "
                    "shards to --out with maskwatch detect's fields plus source, frame and frame_time. A second "
                    "run with the same --out skips what is done.",
    )
    batch.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="image or video files, folders (searched recursively), globs, list files")
    batch.add_argument("--out", required=True, metavar="DIR", help="output folder (also the resume state)")
    batch.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="shard format")
    batch.add_argument("--every-seconds", type=positive_float, default=1.0, metavar="S",
                       help="analyse one video frame every S seconds (default 1)")
    ray_group = batch.add_argument_group("Ray")
    ray_group.add_argument("--address", metavar="ADDR",
                           help="an existing cluster, run from one of its nodes: 'auto' (the cluster this node "
                                "joined) or the head's HOST:PORT (default: start a local Ray for the job)")
    ray_group.add_argument("--workers", type=positive_int, metavar="N",
                           help="worker processes, each loading the models once (default: CPUs / --cpus-per-worker)")
    ray_group.add_argument("--cpus-per-worker", type=positive_float, default=1.0, metavar="N",
                           help="CPUs each worker reserves and uses for its threads (default 1)")
    ray_group.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                           help="inputs per worker call, and per retry if a worker dies (default 8)")
    ray_group.add_argument("--shard-rows", type=positive_int, default=256, metavar="N",
                           help="rows per output shard; a crash loses at most the shard being filled (default 256)")
    batch.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    add_model_options(batch)
    batch.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="maskwatch: %(message)s",
                        stream=sys.stderr)
    try:
        import ray.data  # noqa: F401 - imported here so that a missing extra is a clear message

        from maskwatch.batch import BatchConfig, BatchError, run_batch
    except ImportError as exc:
        print(f"maskwatch: batch needs Ray: pip install 'maskwatch[batch]' ({exc})", file=sys.stderr)
        return EXIT_UNUSABLE
    # Ray Data logs every dataset's start and end, and a warning that its own progress bars are off (the
    # command draws one that counts inputs): only its errors are worth a line on the console. Its import
    # sets the level, so this comes after it.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        options = options_from_args(args)
        _check_model_paths(options.face_model, options.classifier, remote=bool(args.address))
        config = BatchConfig(sources=tuple(args.sources), out=Path(args.out), options=options, fmt=args.format,
                             every_seconds=args.every_seconds, address=args.address, workers=args.workers,
                             cpus_per_worker=args.cpus_per_worker, batch_size=args.batch_size,
                             shard_rows=args.shard_rows, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as exc:
        print(f"maskwatch: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        summary = run_batch(config)
    except KeyboardInterrupt:
        print(f"maskwatch: interrupted; the rows that came back are in {args.out}: run the same command "
              "again to do the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BatchError, ValueError, OSError) as exc:
        print(f"maskwatch: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except Exception as exc:  # noqa: BLE001 - Ray's own errors (a worker that cannot load the models...)
        print(f"maskwatch: the batch failed: {type(exc).__name__}: {exc}\nmaskwatch: the rows written so far "
              f"are kept in {args.out}; run the same command again to resume", file=sys.stderr)
        return EXIT_UNUSABLE
    if not args.quiet:
        for line in summary.lines():
            print(f"maskwatch: {line}", file=sys.stderr)
    return EXIT_FAILED_INPUTS if summary.errors or summary.earlier_errors else EXIT_OK


def _check_model_paths(*paths: str | None, remote: bool) -> None:
    """A mistyped model path fails here, not in every worker; on a cluster the path is the workers' concern."""
    for path in paths:
        if path is not None and not remote and not Path(path).is_file():
            raise FileNotFoundError(f"no such model file: {path}")
