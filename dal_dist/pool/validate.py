"""Checking a pool before any work: one schema, readable files, unique non-null ids, labels, shape.

Structural problems raise `DalDistError` naming the file and column; `pool_info` is the JSON summary
`dal-dist pool info` prints.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError
from dal_dist.pool.listing import open_parquet, pool_listing, pool_locations, read_pool_meta
from dal_dist.pool.schema import REJECTS_FILE, SHAPE_COLUMNS, check_schema

MAX_LABEL = 2**31  # labels are class indices 0..C-1; larger values are refused before any histogram is built


@dataclass
class PoolInfo:
    """What a validated pool holds, so readers can plan (batching, model input shape) before reading."""

    path: str
    files: list[str]
    rows: int
    bytes: int
    schema: pa.Schema
    has_label: bool
    num_classes: int | None
    image_shape: tuple[int, int, int] | None  # (height, width, channels) when uniform and known
    label_counts: dict[int, int] = field(default_factory=dict)  # empty without a label column
    unlabeled_rows: int = 0  # rows whose label is null
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Columns:
    """The `id` (and `label`) columns of a whole pool, gathered for the duplicate and label checks."""

    ids: np.ndarray  # int64, in file order
    file_of: np.ndarray  # int32 index into the file list, one per id
    label_counts: dict[int, int]  # label -> rows, non-null labels only, in label order
    unlabeled: int


def _field_types(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


def _check_same_schema(files: list[str], pfs: Sequence[pq.ParquetFile]) -> pa.Schema:
    """The pool's schema: the first file's, checked, and every other file's must equal it."""
    schema = pfs[0].schema_arrow
    check_schema(files[0], schema)
    for f, pf in zip(files[1:], pfs[1:]):
        if _field_types(pf.schema_arrow) != _field_types(schema):
            a, b = dict(_field_types(schema)), dict(_field_types(pf.schema_arrow))
            diff = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
            detail = "; ".join(f"`{n}`: {a.get(n, 'absent')} in {fsx.basename(files[0])} vs {b.get(n, 'absent')}"
                               for n in diff) or "column order differs"
            raise DalDistError(f"{f}: schema differs from {files[0]}: {detail}")
    return schema


def _label_counts(f: str, ids: pa.ChunkedArray, lab: pa.ChunkedArray) -> dict[int, int]:
    """Histogram of one file's non-null labels (a dict: memory follows the distinct labels, not the largest);
    a label outside [0, MAX_LABEL) is refused naming the file, row and id."""
    values = lab.fill_null(0).to_numpy()
    valid = np.ones(len(values), bool) if lab.null_count == 0 else ~np.asarray(lab.is_null(), dtype=bool)
    if values.dtype.kind == "u":
        bad = valid & (values >= MAX_LABEL)
    else:
        values = values.astype(np.int64, copy=False)
        bad = valid & ((values < 0) | (values >= MAX_LABEL))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DalDistError(f"{f}: column `label` has value {values[row]} at row {row} (id {ids[row].as_py()}); "
                           "expected class indices 0..C-1 below 2^31, null for unknown")
    uniq, counts = np.unique(values[valid].astype(np.int64), return_counts=True)
    return dict(zip(uniq.tolist(), counts.tolist()))


def _read_columns(files: list[str], pfs: Sequence[pq.ParquetFile], has_label: bool) -> _Columns:
    """Read ids (and labels) file by file: O(N) int64 memory (8 MB per million rows) plus an int32 file index."""
    ids_parts, file_parts = [], []
    label_counts: Counter[int] = Counter()
    unlabeled = 0
    cols = ["id", "label"] if has_label else ["id"]
    for i, (f, pf) in enumerate(zip(files, pfs)):
        try:
            table = pf.read(columns=cols)
        except (pa.ArrowException, OSError) as e:
            raise DalDistError(f"{f}: cannot read column(s) {cols} (truncated or corrupt?): {e}") from e
        col = table.column("id")
        if col.null_count:
            raise DalDistError(f"{f}: column `id` has {col.null_count} null values (ids must be non-null)")
        ids_parts.append(col.to_numpy().astype(np.int64, copy=False))
        file_parts.append(np.full(len(col), i, dtype=np.int32))
        if has_label:
            lab = table.column("label")
            unlabeled += lab.null_count
            label_counts.update(_label_counts(f, col, lab))
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64)
    file_of = np.concatenate(file_parts) if file_parts else np.zeros(0, np.int32)
    return _Columns(ids, file_of, dict(sorted(label_counts.items())), int(unlabeled))


def _check_unique_ids(ids: np.ndarray, file_of: np.ndarray, files: list[str]) -> None:
    sorted_ids = ids[np.argsort(ids, kind="stable")]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(dup):
        example = int(sorted_ids[dup[0]])
        where = sorted({files[j] for j in file_of[ids == example]})
        raise DalDistError(f"column `id`: {len(dup)} duplicate id(s), e.g. id {example} appears "
                           f"{int((ids == example).sum())} times in {', '.join(where)}")


def _uniform_shape(pfs: Sequence[pq.ParquetFile], schema: pa.Schema) -> tuple[int, int, int] | None:
    """The raw image shape when Parquet statistics show one non-null value per shape column, else None."""
    if not all(c in schema.names for c in SHAPE_COLUMNS):
        return None
    shape = []
    for name in SHAPE_COLUMNS:
        values = set()
        for pf in pfs:
            idx = pf.schema_arrow.get_field_index(name)
            for rg in range(pf.metadata.num_row_groups):
                st = pf.metadata.row_group(rg).column(idx).statistics
                if st is None or not st.has_min_max or st.null_count:
                    return None
                values.update((st.min, st.max))
        if len(values) != 1:
            return None
        shape.append(int(values.pop()))
    return tuple(shape)  # type: ignore[return-value]


def validate_pool(path: str | os.PathLike) -> PoolInfo:
    """Check a pool's structure (readable files, one schema, unique non-null ids) before any work starts."""
    fs, infos = pool_listing(path)
    files = pool_locations(path, infos)
    meta = read_pool_meta(path)
    pfs = [open_parquet(i.path, fs) for i in infos]
    schema = _check_same_schema(files, pfs)
    has_label = "label" in schema.names
    cols = _read_columns(files, pfs, has_label)
    _check_unique_ids(cols.ids, cols.file_of, files)
    num_classes = meta.get("num_classes")
    if num_classes is None and has_label and cols.label_counts:
        num_classes = max(cols.label_counts) + 1
    shape = _uniform_shape(pfs, schema)
    if shape is None and all(meta.get(k) for k in SHAPE_COLUMNS):
        shape = (int(meta["height"]), int(meta["width"]), int(meta["channels"]))
    return PoolInfo(
        path=str(path), files=files, rows=int(len(cols.ids)), bytes=sum(int(i.size or 0) for i in infos),
        schema=schema, has_label=has_label, num_classes=None if num_classes is None else int(num_classes),
        image_shape=shape, label_counts=cols.label_counts,
        unlabeled_rows=cols.unlabeled, meta=meta,
    )


def pool_info(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready summary of a pool (rows, files, bytes, schema, label histogram, shape, rejects)."""
    info = validate_pool(path)
    rejects_path = fsx.join(path, REJECTS_FILE) if fsx.is_dir(path) else None
    rejects = (pq.ParquetFile(fsx.open_input(rejects_path)).metadata.num_rows
               if rejects_path and fsx.is_file(rejects_path) else 0)
    shape = info.image_shape
    return {
        "path": info.path,
        "rows": info.rows,
        "files": len(info.files),
        "bytes": info.bytes,
        "schema": {f.name: str(f.type) for f in info.schema},
        "has_label": info.has_label,
        "num_classes": info.num_classes,
        "label_counts": {str(k): v for k, v in sorted(info.label_counts.items())},
        "unlabeled_rows": info.unlabeled_rows,
        "image_shape": None if shape is None else dict(zip(SHAPE_COLUMNS, shape)),
        "rejects": int(rejects),
        "meta": info.meta,
    }
