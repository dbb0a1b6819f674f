"""Reading id lists (labeled sets, selections) from Parquet or CSV files with an `id` column (paths or URIs)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError


def read_ids(path: str | os.PathLike, *, allow_duplicates: bool = False) -> np.ndarray:
    """Return the int64 `id` column of a Parquet/CSV file (or Parquet directory), validated."""
    p = os.fspath(path)
    if not fsx.exists(p):
        raise DalDistError(f"{p}: id file not found")
    suffix = os.path.splitext(fsx.basename(p))[1].lower()
    fs, fs_path = fsx.resolve(p)
    try:
        if fsx.is_dir(p) or suffix in {".parquet", ".pq"}:
            table = pq.read_table(fs_path, columns=["id"], filesystem=fs) if _has_id(p) else None
        elif suffix in {".csv", ".tsv", ".txt"}:
            opts = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            with fs.open_input_stream(fs_path) as f:
                table = pacsv.read_csv(f, parse_options=opts)
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
    ids = col.to_numpy()
    if ids.dtype == np.uint64 and len(ids) and ids.max() >= 2**63:
        row = int(np.argmax(ids >= 2**63))
        raise DalDistError(f"{p}: column `id` has value {ids[row]} at row {row}, expected int64 ids (below 2^63)")
    ids = ids.astype(np.int64, copy=False)
    if not allow_duplicates:
        uniq, counts = np.unique(ids, return_counts=True)
        if len(uniq) != len(ids):
            dup = uniq[counts > 1][:5].tolist()
            raise DalDistError(f"{p}: column `id` has duplicate ids, e.g. {dup}")
    return ids


def _has_id(p: str) -> bool:
    fs, fs_path = fsx.resolve(p)
    try:
        schema = (pq.read_schema(fs_path, filesystem=fs) if fsx.is_file(p)
                  else pq.ParquetDataset(fs_path, filesystem=fs).schema)
    except (pa.ArrowInvalid, OSError) as e:
        raise DalDistError(f"{p}: not a readable Parquet file: {e}") from e
    return "id" in schema.names
