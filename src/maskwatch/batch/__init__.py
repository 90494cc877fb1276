"""``maskwatch batch``: large archives of photos and videos on a Ray cluster (the ``batch`` extra).

    from maskwatch.batch import BatchConfig, run_batch, read_results
    summary = run_batch(BatchConfig(sources=("photos/",), out=Path("results")))
    rows = read_results("results")   # maskwatch detect's fields, plus source, frame, frame_time, worker, seconds

Only ``runner`` needs Ray; planning the sources and reading results need pyarrow alone.
"""

from maskwatch.batch.runner import BatchConfig, BatchError, BatchSummary, run_batch
from maskwatch.batch.sources import VIDEO_SUFFIXES, WorkItem, expand_files, plan
from maskwatch.batch.store import SCHEMA, read_results

__all__ = ["SCHEMA", "VIDEO_SUFFIXES", "BatchConfig", "BatchError", "BatchSummary", "WorkItem", "expand_files",
           "plan", "read_results", "run_batch"]
