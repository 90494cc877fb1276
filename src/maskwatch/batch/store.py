"""The output folder of ``maskwatch batch``: result shards (Parquet or JSON lines), written atomically.

Each shard is written to a hidden temporary name and renamed when complete, so a shard either holds all of
its rows or does not exist. The shards are also the resume manifest: the rows in them are the inputs done,
and nothing else records progress, so the two can never disagree. A crash loses at most the shard being
filled (and the results still inside Ray); a second run finds the rest done.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]

from maskwatch.batch.sources import Key

FORMATS = ("parquet", "jsonl")
SHARD_PREFIX = "part-"
SETTINGS_FILE = "_batch.json"  # "_" and "." names are skipped by pyarrow and pandas when reading the folder
SUMMARY_FILE = "_summary.json"

# The columns of ``maskwatch detect``'s JSON (``ImageResult.to_dict()``), then the batch's own: where the row
# came from (source, frame, frame_time), and which worker took how long (worker, seconds).
FACE_TYPE = pa.struct([
    ("box", pa.list_(pa.float64())),
    ("score", pa.float64()),
    ("landmarks", pa.list_(pa.list_(pa.float64()))),
    ("label", pa.string()),
    ("mask_probability", pa.float64()),
    ("probabilities", pa.map_(pa.string(), pa.float64())),
])
SCHEMA = pa.schema([
    ("file", pa.string()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("faces", pa.list_(FACE_TYPE)),
    ("error", pa.string()),
    ("source", pa.string()),
    ("frame", pa.int64()),
    ("frame_time", pa.float64()),
    ("worker", pa.string()),
    ("seconds", pa.float64()),
])


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (``ImageResult.to_dict()`` plus the batch fields) as an Arrow table of ``SCHEMA``."""
    arrow_rows = [{**row, "faces": [{**face, "probabilities": list(face["probabilities"].items())}
                                    for face in row["faces"]]} for row in rows]
    return pa.Table.from_pylist(arrow_rows, schema=SCHEMA)


def from_table(table: pa.Table) -> list[dict[str, Any]]:
    """Rows back as plain dicts: ``faces`` exactly as ``maskwatch detect`` prints them."""
    rows = table.to_pylist()
    for row in rows:
        for face in row["faces"]:
            face["probabilities"] = dict(face["probabilities"])
    return rows


class ShardWriter:
    """Collect rows and write them as shards of ``shard_rows`` rows (or older than ``max_age`` seconds)."""

    def __init__(self, out: Path, fmt: str = "parquet", shard_rows: int = 256, max_age: float = 60.0) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.out = out
        self.fmt = fmt
        self.shard_rows = shard_rows
        self.max_age = max_age
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.shards: list[Path] = []
        self.rows_written = 0
        self._buffer: list[dict[str, Any]] = []
        self._since = time.monotonic()

    def add(self, rows: list[dict[str, Any]]) -> Path | None:
        """Buffer ``rows``; write a shard when enough have gathered. Returns the shard written, if any."""
        if not self._buffer:
            self._since = time.monotonic()
        self._buffer.extend(rows)
        if len(self._buffer) >= self.shard_rows or time.monotonic() - self._since >= self.max_age:
            return self.flush()
        return None

    def flush(self) -> Path | None:
        if not self._buffer:
            return None
        path = self.out / f"{SHARD_PREFIX}{self.run_id}-{len(self.shards):05d}.{self.fmt}"
        temporary = self.out / f".{path.name}.tmp"
        if self.fmt == "parquet":
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            pq.write_table(to_table(self._buffer), temporary)
        else:
            with temporary.open("w", encoding="utf-8") as handle:
                for row in self._buffer:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)  # atomic: the shard is complete or absent
        self.shards.append(path)
        self.rows_written += len(self._buffer)
        self._buffer = []
        return path


def shard_paths(out: Path) -> list[Path]:
    """The complete shards in ``out``, of both formats, in name order."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name.startswith(SHARD_PREFIX)
                  and p.suffix.lstrip(".") in FORMATS and p.is_file())


def remove_partial_shards(out: Path) -> int:
    """Delete the temporary files a crashed run left behind; returns how many."""
    if not out.is_dir():
        return 0
    partial = [p for p in out.iterdir() if p.name.startswith(f".{SHARD_PREFIX}") and p.name.endswith(".tmp")]
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


def iter_rows(out: Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every row in the shards of ``out`` (only ``columns`` of Parquet shards, when given)."""
    import pyarrow.parquet as pq

    for path in shard_paths(out):
        if path.suffix == ".parquet":
            table = pq.read_table(path, columns=columns)
            yield from (table.to_pylist() if columns else from_table(table))
        else:
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)


def read_results(out: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a batch output folder, as ``maskwatch detect`` fields plus the batch fields."""
    return list(iter_rows(Path(out)))


def done_keys(out: Path) -> dict[Key, bool]:
    """The (source, frame) key of every row already written, and whether that row holds an error."""
    return {(row["source"], row["frame"]): row["error"] is not None
            for row in iter_rows(out, columns=["source", "frame", "error"])}


def check_settings(out: Path, settings: dict[str, Any], fmt: str) -> None:
    """Refuse (ValueError) to add rows to ``out`` made with other settings than its rows', or shards of
    another format (one folder is read as one dataset, e.g. by ``pd.read_parquet``). Writes nothing."""
    path = out / SETTINGS_FILE
    shards = shard_paths(out)
    if path.is_file() and shards:  # settings without a shard are a run's that wrote nothing: they tie nothing
        before = json.loads(path.read_text(encoding="utf-8"))
        if before != settings:
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            raise ValueError(f"{out} holds results made with other settings ({', '.join(changed)}); "
                             "use a new --out folder, or the settings of the first run")
    formats = sorted({p.suffix.lstrip(".") for p in shards})
    if formats and fmt not in formats:
        raise ValueError(f"{out} holds {' and '.join(formats)} shards: use --format {formats[0]} to add to them, "
                         "or a new --out folder")


def record_settings(out: Path, settings: dict[str, Any]) -> None:
    """Keep the settings of the first rows written to ``out`` (``check_settings`` compares with them);
    those of a run that wrote no shard are replaced."""
    path = out / SETTINGS_FILE
    if path.is_file() and shard_paths(out):
        return
    temporary = out / f".{SETTINGS_FILE}.tmp"
    temporary.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
