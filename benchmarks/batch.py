"""``maskwatch batch`` on a local Ray with 1 and 2 workers against plain ``maskwatch detect``, in one run.

    python benchmarks/batch.py ../shared/datasets/face-mask                    # 300 photos, 1 and 2 workers
    python benchmarks/batch.py ../shared/datasets/face-mask --limit 0 --workers 2   # all of them

Prints images/s for each, the scaling from 1 to 2 workers, where the time goes (starting Ray, starting the
workers and loading their models, the work itself), and whether every batch row equals detect's JSON line.
Each batch run starts its own local Ray, as ``maskwatch batch`` does; the photo defaults (three YuNet passes)
are used unless ``--extra-scales`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from maskwatch.batch import BatchConfig, read_results, run_batch
from maskwatch.cli.common import scales
from maskwatch.inputs import expand_inputs
from maskwatch.options import Options

FIELDS = ("file", "width", "height", "faces", "error")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a folder of photos (searched recursively)")
    parser.add_argument("--limit", type=int, default=300, help="photos to use, spread over the folder (0: all)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, e.g. '1,2' (default)")
    parser.add_argument("--extra-scales", default=None, help="as maskwatch detect's option ('' for one pass)")
    args = parser.parse_args()
    import ray.data  # noqa: F401 - before quieting its logger: its import sets the level

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # one line per dataset run, not useful here

    files = [str(path) for path, _name in expand_inputs([args.data])]
    if args.limit and args.limit < len(files):
        step = len(files) / args.limit
        files = [files[int(k * step)] for k in range(args.limit)]
    passes = [] if args.extra_scales is None else ["--extra-scales", args.extra_scales]
    options = Options.photo(**({} if args.extra_scales is None else {"extra_scales": scales(args.extra_scales)}))
    described = " ".join(passes) or "the face model's photo default"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{len(files)} photos from {args.data}; {described}")

    with tempfile.TemporaryDirectory() as tmp:
        detect_json = Path(tmp) / "detect.jsonl"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "maskwatch.cli", "detect", *files, "--json", str(detect_json),
                        "--quiet", *passes], check=False, stderr=subprocess.DEVNULL)
        detect_seconds = time.monotonic() - started
        reference = {row["file"]: row for row in map(json.loads, detect_json.read_text().splitlines())}
        rows = [("maskwatch detect (one process)", detect_seconds, len(files) / detect_seconds, "-", "-", "-", "-",
                 "-")]
        one_worker_rate = 0.0
        for workers in [int(n) for n in args.workers.split(",")]:
            out = Path(tmp) / f"batch-{workers}"
            summary = run_batch(BatchConfig(sources=tuple(files), out=out, options=options, workers=workers,
                                            progress=False))
            results = read_results(out)
            same = sum({k: row[k] for k in FIELDS} == reference.get(row["file"]) for row in results)
            work = summary.seconds - summary.startup_seconds - summary.first_row_seconds
            rate = summary.per_second
            one_worker_rate = rate if workers == 1 else one_worker_rate
            rows.append((f"maskwatch batch, {workers} worker(s)", summary.seconds, rate,
                         f"{summary.startup_seconds:.1f}", f"{summary.first_row_seconds:.1f}",
                         f"{summary.worker_seconds / max(1, summary.processed) * 1000:.0f}",
                         f"{rate / one_worker_rate:.2f}x" if one_worker_rate else "-", f"{same}/{len(files)}"))
            print(f"  {workers} worker(s): {work:.1f} s after the first result; steady rate "
                  f"{(summary.processed - 1) / work if work > 0 else 0:.2f} images/s; workers busy "
                  f"{summary.worker_seconds / (workers * max(work + summary.first_row_seconds, 1e-9)):.0%} of the "
                  "time after Ray started", flush=True)
    print("what | wall s | images/s | Ray start s | to first result s | worker ms/image | vs 1 worker | "
          "rows equal to detect")
    print("---|---|---|---|---|---|---|---")
    for name, seconds, rate, *rest in rows:
        print(f"{name} | {seconds:.1f} | {rate:.2f} | " + " | ".join(rest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
