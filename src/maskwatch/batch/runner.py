"""Run a batch on Ray: plan the work, skip what is done, map it over a pool of workers, write shards.

The driver (this process) expands the sources and probes the videos, reads the keys already in the output
folder, and hands the rest to Ray Data as items. ``map_batches`` runs ``BatchAnalyzer`` on an actor pool:
each worker loads the models once and decodes its own inputs, so only paths travel to the workers and small
result rows come back. The driver writes the rows as shards; a worker that dies is restarted by Ray and its
unfinished batch is retried, so every input still ends up in exactly one row. (Ray Data restarts a dead
worker and retries its batch without limit; an input that crashes its decoder every time would keep it busy:
a limit would need ``max_task_retries`` in ``map_batches``' deprecated ``ray_remote_args``.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maskwatch.batch import sources as src
from maskwatch.batch.store import (
    FORMATS,
    SUMMARY_FILE,
    ShardWriter,
    check_settings,
    done_keys,
    from_table,
    record_settings,
    remove_partial_shards,
)
from maskwatch.options import Options, check_count, check_number

log = logging.getLogger("maskwatch.batch")

# The local object store only ever holds small result rows and item lists: 256 MB instead of Ray's default
# 30% of the memory, which the models and the decoders need more.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


class BatchError(RuntimeError):
    """The job cannot run (bad sources or output folder, Ray not reachable); the message says why."""


@dataclass(frozen=True)
class BatchConfig:
    sources: tuple[str, ...]
    out: Path
    options: Options = field(default_factory=Options.photo)
    fmt: str = "parquet"
    every_seconds: float = 1.0
    address: str | None = None  # None: a local Ray started for the job; "auto" or the head's HOST:PORT: a cluster
    workers: int | None = None  # None (or 0): as many as the CPUs allow
    cpus_per_worker: float = 1.0
    batch_size: int = 8  # items per call of a worker
    shard_rows: int = 256  # rows per output shard
    progress: bool = True

    def __post_init__(self) -> None:
        """Refuse (ValueError) what the command line refuses, before any Ray starts."""
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, not {self.fmt!r}")
        check_number("every_seconds", self.every_seconds, low=0.0, low_open=True)
        check_number("cpus_per_worker", self.cpus_per_worker, low=0.0, low_open=True)
        if self.workers == 0:  # 0, like None: as many as the CPUs allow
            object.__setattr__(self, "workers", None)
        for name in ("batch_size", "shard_rows", *(("workers",) if self.workers is not None else ())):
            object.__setattr__(self, name, check_count(name, getattr(self, name)))
        if self.address and self.address.startswith("ray://"):
            # Ray Data does not run through Ray Client: its first dataset fails inside Ray (measured with
            # Ray 2.60), after the connection itself has worked.
            raise ValueError(f"--address {self.address}: Ray Client (ray://) cannot run Ray Data; run maskwatch "
                             "batch on a node of the cluster with --address auto (or the head's HOST:6379)")

    def settings(self) -> dict[str, Any]:
        """What makes results comparable: rows made with other settings must not mix in one folder."""
        options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.options).items()
                   if k != "threads"}
        return {"options": options, "every_seconds": self.every_seconds}


@dataclass
class BatchSummary:
    inputs: int = 0  # rows the sources give: photos plus sampled video frames
    already_done: int = 0  # of them, found in the output folder and skipped
    processed: int = 0  # rows written by this run
    images: int = 0
    video_frames: int = 0
    faces: Counter = field(default_factory=Counter)  # by label
    errors: int = 0  # rows with an error written by this run
    earlier_errors: int = 0  # rows with an error among those already done (a resumed run does not retry them)
    workers: int = 0
    seconds: float = 0.0  # the whole run, Ray's start included
    startup_seconds: float = 0.0  # planning and starting (or reaching) Ray
    first_row_seconds: float = 0.0  # from submitting the work to the first result (workers loading models)
    worker_seconds: float = 0.0  # time the workers spent on the rows, all workers together
    shards: int = 0
    interrupted: bool = False

    @property
    def per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.processed += len(rows)
        for row in rows:
            if row["frame"] is None:
                self.images += 1
            else:
                self.video_frames += 1
            self.errors += row["error"] is not None
            self.faces.update(face["label"] for face in row["faces"])
            self.worker_seconds += row["seconds"] or 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["faces"] = dict(sorted(self.faces.items()))
        data["per_second"] = round(self.per_second, 3)
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}

    def lines(self) -> list[str]:
        labels = ", ".join(f"{label} {n}" for label, n in sorted(self.faces.items())) or "none"
        return [
            f"{self.inputs} inputs; {self.already_done} already done; {self.processed} processed now "
            f"({self.images} images, {self.video_frames} video frames) by {self.workers} worker(s)",
            f"faces: {sum(self.faces.values())} ({labels}); errors: {self.errors}"
            + (f" (and {self.earlier_errors} in the rows of earlier runs)" if self.earlier_errors else ""),
            f"time: {self.seconds:.1f} s ({self.startup_seconds:.1f} s to start, {self.first_row_seconds:.1f} s "
            f"to the first result), {self.per_second:.2f} inputs/s",
        ]


def run_batch(config: BatchConfig, on_shard: Callable[[Path], None] | None = None) -> BatchSummary:
    """Process every input of ``config`` that the output folder does not hold yet; return the summary.

    Uses the Ray this process is connected to, when there is one (tests, notebooks); otherwise connects to
    ``config.address`` or starts a local Ray for the job and stops it at the end. ``on_shard`` is called
    after each shard is written. On KeyboardInterrupt the rows already received are written before it
    propagates, so a resumed run loses nothing that had come back.
    """
    started = time.monotonic()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary()
    with _exclusive(out):
        check_settings(out, config.settings(), config.fmt)  # recorded once rows come back, not before
        if removed := remove_partial_shards(out):
            log.info("removed %d unfinished shard(s) of an interrupted run", removed)
        try:
            items = src.plan(src.expand_files(config.sources), config.every_seconds)
        except src.SourceError as exc:
            raise BatchError(str(exc)) from None
        done = done_keys(out)
        summary.inputs = src.count_keys(items)
        pending = src.pending_items(items, done)
        summary.already_done = summary.inputs - src.count_keys(pending)
        summary.earlier_errors = sum(done.get(key, False) for item in items for key in item.keys())  # noqa: SIM118 - WorkItem.keys
        if pending:
            with _ray(config) as workers:
                summary.workers = workers
                summary.startup_seconds = time.monotonic() - started
                _process(config, pending, workers, summary, on_shard)
        summary.seconds = time.monotonic() - started
        (out / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return summary


def _process(config: BatchConfig, pending: list[src.WorkItem], workers: int, summary: BatchSummary,
             on_shard: Callable[[Path], None] | None) -> None:
    from tqdm import tqdm

    writer = ShardWriter(Path(config.out), config.fmt, config.shard_rows)
    total = src.count_keys(pending)
    submitted = time.monotonic()
    bar = tqdm(total=total, desc="batch", unit="input", disable=not config.progress, smoothing=0.1)
    try:
        for rows in _results(config, pending, workers):
            if not summary.processed:
                summary.first_row_seconds = time.monotonic() - submitted
                record_settings(Path(config.out), config.settings())
            summary.add(rows)
            bar.update(len(rows))
            if (shard := writer.add(rows)) is not None:
                summary.shards += 1
                if on_shard is not None:
                    on_shard(shard)
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        bar.close()
        if writer.flush() is not None:  # what came back is complete: keep it, also on the way out of an error
            summary.shards += 1


def _results(config: BatchConfig, pending: list[src.WorkItem], workers: int) -> Iterator[list[dict[str, Any]]]:
    """Result rows as the workers finish them (in no particular order), one list per Ray block."""
    import ray.data

    from maskwatch.batch.worker import BatchAnalyzer

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver's own bar counts inputs, not Ray blocks
    context.print_on_execution_start = False
    # One block per worker call: a worker's batch is also the unit Ray retries when the worker dies.
    blocks = max(1, math.ceil(len(pending) / config.batch_size))
    dataset = ray.data.from_items([item.to_row() for item in pending], override_num_blocks=blocks)
    results = dataset.map_batches(
        BatchAnalyzer,
        fn_constructor_kwargs={"options": config.options, "cpus": config.cpus_per_worker},
        batch_size=config.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=config.cpus_per_worker,
    )
    for table in results.iter_batches(batch_size=None, batch_format="pyarrow"):
        if rows := from_table(table):
            yield rows


@contextmanager
def _ray(config: BatchConfig) -> Iterator[int]:
    """Connect to Ray (or start it) and yield the number of workers to run."""
    import ray

    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        if config.address:
            kwargs["address"] = config.address
        else:
            cores = os.cpu_count() or 1
            wanted = (config.workers or max(1, int(cores // config.cpus_per_worker))) * config.cpus_per_worker
            kwargs.update(num_cpus=max(1, math.ceil(wanted)), object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BatchError(f"cannot start or reach Ray ({config.address or 'local'}): {exc}") from None
        started_here = True
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        fits = max(1, int(cpus // config.cpus_per_worker))
        workers = min(config.workers or fits, fits)
        if config.workers and config.workers > fits:  # a fixed pool larger than the cluster would wait forever
            log.warning("%d worker(s) of %g CPU do not fit in %g CPUs; running %d", config.workers,
                        config.cpus_per_worker, cpus, workers)
        yield workers
    finally:
        if started_here:
            ray.shutdown()


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One run per output folder at a time: two would process the same inputs twice."""
    with (out / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchError(f"another maskwatch batch is writing to {out}") from None
        yield
