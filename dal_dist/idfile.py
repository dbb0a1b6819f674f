"""Reading id lists (labeled sets, selections) from Parquet or CSV files with an `id` column."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dal_dist.errors import DalDistError


def read_ids(path: str | os.PathLike, *, allow_duplicates: bool = False) -> np.ndarray:
    """Return the int64 `id` column of a Parquet/CSV file (or Parquet directory), validated."""
    p = Path(path)
    if not p.exists():
        raise DalDistError(f"{p}: id file not found")
    try:
        if p.is_dir() or p.suffix.lower() in {".parquet", ".pq"}:
            table = pq.read_table(p, columns=["id"]) if _has_id(p) else None
        elif p.suffix.lower() in {".csv", ".tsv", ".txt"}:
            opts = pacsv.ParseOptions(delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
            table = pacsv.read_csv(p, parse_options=opts)
        else:
            raise DalDistError(f"{p}: expected a .parquet or .csv file with an `id` column")
    except DalDistError:
        raise
    except (pa.ArrowInvalid, OSError) as e:
        raise DalDistError(f"{p}: cannot read id file: {e}") from e
    if table is None or "id" not in table.column_names:
        raise DalDistError(f"{p}: missing column `id` (expected an integer id column)")
    col = table.column("id")
    if not pa.types.is_integer(col.type):
        raise DalDistError(f"{p}: column `id` has type {col.type}, expected integers")
    if col.null_count:
        raise DalDistError(f"{p}: column `id` has {col.null_count} empty values")
    ids = col.to_numpy().astype(np.int64, copy=False)
    if not allow_duplicates:
        uniq, counts = np.unique(ids, return_counts=True)
        if len(uniq) != len(ids):
            dup = uniq[counts > 1][:5].tolist()
            raise DalDistError(f"{p}: column `id` has duplicate ids, e.g. {dup}")
    return ids


def _has_id(p: Path) -> bool:
    try:
        schema = pq.read_schema(p) if p.is_file() else pq.ParquetDataset(p).schema
    except (pa.ArrowInvalid, OSError) as e:
        raise DalDistError(f"{p}: not a readable Parquet file: {e}") from e
    return "id" in schema.names
