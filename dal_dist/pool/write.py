"""Writing a pool: raw-pixel record batches and the streaming `PoolWriter` every ingest and synth goes through.

Files of FILE_ROWS rows in ROW_GROUP_ROWS row groups; the pool is published whole when the writer closes
(`dal_dist.pool.publish`): an exception or interrupt before that leaves nothing at --out.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError
from dal_dist.pool.publish import PoolStage
from dal_dist.pool.schema import (
    FILE_ROWS, META_FILE, POOL_FORMAT, REJECTS_FILE, REJECTS_SCHEMA, ROW_GROUP_ROWS, pool_schema,
)


def raw_image_batch(ids: np.ndarray, images: np.ndarray, labels: np.ndarray | None = None,
                    schema: pa.Schema | None = None) -> pa.RecordBatch:
    """Wrap uint8 N×H×W×C pixels as a pool batch without a per-row copy (one shared data buffer)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4:
        raise ValueError(f"images must be N×H×W×C, got shape {images.shape}")
    n, hh, ww, cc = images.shape
    row = hh * ww * cc
    if n * row >= 2**31:
        raise ValueError("batch too large for 32-bit binary offsets; write smaller chunks")
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * row).tobytes())
    image = pa.Array.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(images.reshape(-1))])
    schema = schema or pool_schema(has_label=labels is not None)
    cols: dict[str, pa.Array] = {
        "id": pa.array(np.asarray(ids, dtype=np.int64)), "image": image,
        "height": pa.array(np.full(n, hh, np.int32)), "width": pa.array(np.full(n, ww, np.int32)),
        "channels": pa.array(np.full(n, cc, np.int32)),
    }
    if "label" in schema.names:
        cols["label"] = pa.array(np.asarray(labels, dtype=np.int64)) if labels is not None else pa.nulls(n, pa.int64())
    return pa.RecordBatch.from_arrays([cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema],
                                      schema=schema)


def num_classes_of(labels: np.ndarray | None) -> int | None:
    """Class count implied by integer labels 0..C-1 (None without labels), for `_dal_pool.json`."""
    return int(labels.max()) + 1 if labels is not None and len(labels) else None


@dataclass
class IngestResult:
    """What a write produced, for the CLI to report."""

    out: str
    rows: int
    rejects: int
    files: list[str]
    seconds: float = 0.0
    reject_examples: list[str] = field(default_factory=list)  # the first few reject reasons, for the summary line


class PoolWriter:
    """Streaming pool writer: files of FILE_ROWS rows in ROW_GROUP_ROWS row groups, published whole on `close`.

    Row groups depend only on row counts, never on how callers chunk their writes, so the same rows
    give the same bytes. Memory: one row group of buffered rows plus the rejects list. `out` (a path or
    a URI, see dal_dist.fs) must be new or an empty directory; used as a context manager, any exception
    (Ctrl-C included) discards what was written.
    """

    def __init__(self, out: str | os.PathLike, schema: pa.Schema, *, file_rows: int = FILE_ROWS,
                 row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.out = str(out)
        self.schema = schema
        self.file_rows, self.row_group_rows = file_rows, row_group_rows
        self.rows = 0
        self._t0 = time.perf_counter()
        self.files: list[str] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._file_rows_written = 0
        self._stack: ExitStack | None = None
        self._writer: pq.ParquetWriter | None = None
        self._reject_ids: list[int] = []
        self._reject_reasons: list[str] = []
        self._stage = PoolStage(self.out)  # refuses a taken --out; files go to self._stage.dir until close

    def write(self, batch: pa.RecordBatch) -> None:
        """Append rows (any count); full row groups are flushed as they fill."""
        if batch.schema != self.schema:
            batch = pa.RecordBatch.from_arrays([batch.column(f.name).cast(f.type) for f in self.schema],
                                               schema=self.schema)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        while self._pending_rows >= self._next_group_rows():
            self._flush(self._next_group_rows())

    def reject(self, ids: Iterable[int], reasons: Iterable[str]) -> None:
        """Record rows that could not be taken (they go to `_rejects.parquet`)."""
        self._reject_ids.extend(int(i) for i in ids)
        self._reject_reasons.extend(reasons)

    def _next_group_rows(self) -> int:
        return min(self.row_group_rows, self.file_rows - self._file_rows_written)

    def _flush(self, k: int) -> None:
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        group, rest = table.slice(0, k), table.slice(k)
        if self._writer is None:
            self._stack = ExitStack()
            tmp = self._stack.enter_context(fsx.atomic_output(fsx.join(self._stage.dir, self._part_name())))
            self._writer = pq.ParquetWriter(
                tmp, self.schema, compression="snappy",
                use_dictionary=[c for c in ("height", "width", "channels", "label") if c in self.schema.names],
                write_statistics=[c for c in ("id", "height", "width", "channels", "label") if c in self.schema.names],
            )
        self._writer.write_table(group, row_group_size=k)
        self._file_rows_written += k
        self.rows += k
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows
        if self._file_rows_written >= self.file_rows:
            self._close_file()

    def _part_name(self) -> str:
        return f"part-{len(self.files):05d}.parquet"

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self.files.append(fsx.join(self.out, self._part_name()))  # where it will be once published
            assert self._stack is not None
            self._stack.close()  # fsync + rename into place
            self._stack = None
            self._file_rows_written = 0

    def close(self, meta: Mapping[str, Any]) -> IngestResult:
        """Flush the last rows, write `_rejects.parquet` and `_dal_pool.json`, then publish the pool at `out`."""
        try:
            while self._pending_rows:
                self._flush(min(self._pending_rows, self._next_group_rows()))
            self._close_file()
            if self.rows == 0:
                example = (f"; e.g. id {self._reject_ids[0]}: {self._reject_reasons[0]}"
                           if self._reject_ids else "")
                raise DalDistError(f"{self.out}: no rows could be taken ({len(self._reject_ids)} rejected"
                                   f"{example}); nothing was written")
            rejects = pa.table({"id": pa.array(self._reject_ids, pa.int64()),
                                "reason": pa.array(self._reject_reasons, pa.string())}, schema=REJECTS_SCHEMA)
            fsx.write_table_atomic(fsx.join(self._stage.dir, REJECTS_FILE), rejects)
            fsx.write_json_atomic(fsx.join(self._stage.dir, META_FILE),
                                  {"format": POOL_FORMAT, "rows": self.rows, "rejects": len(self._reject_ids), **meta})
            self._stage.publish()
        except BaseException:
            self.abort()
            raise
        return IngestResult(self.out, self.rows, len(self._reject_ids), list(self.files),
                            time.perf_counter() - self._t0, self._reject_reasons[:3])

    def abort(self) -> None:
        """Drop everything written (the file in progress, finished files, staging): nothing is published."""
        writer, self._writer = self._writer, None
        stack, self._stack = self._stack, None
        try:
            if writer is not None:
                try:
                    writer.close()
                except Exception:  # noqa: BLE001 - the file is being dropped anyway
                    pass
            if stack is not None:
                stack.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temp file
        finally:
            self._stage.discard()

    def __enter__(self) -> PoolWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()


def write_pool(out: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None = None, *,
               ids: np.ndarray | None = None, meta: Mapping[str, Any] | None = None,
               chunk_rows: int = FILE_ROWS) -> IngestResult:
    """Write in-memory uint8 N×H×W×C images (and labels) as a raw-pixel pool."""
    n, hh, ww, cc = images.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    schema = pool_schema(has_label=labels is not None)
    with PoolWriter(out, schema) as w:
        for s in range(0, n, chunk_rows):
            w.write(raw_image_batch(ids[s:s + chunk_rows], images[s:s + chunk_rows],
                                    None if labels is None else labels[s:s + chunk_rows], schema))
        return w.close({"num_classes": num_classes_of(labels), "height": hh, "width": ww, "channels": cc,
                        **(meta or {})})
