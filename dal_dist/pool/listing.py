"""Where a pool's data is: its Parquet files in name order, its metadata file, and the refusal of a
pool whose writing did not finish. Every reader goes through `pool_listing`, so they all agree."""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError
from dal_dist.pool.schema import INCOMPLETE_MARKER, META_FILE

log = logging.getLogger(__name__)

# integer fields of `_dal_pool.json` and their least value: readers size models and batches with them
META_INT_FIELDS = {"rows": 0, "rejects": 0, "num_classes": 1, "height": 1, "width": 1, "channels": 1}


def pool_listing(path: str | os.PathLike) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The pool's filesystem and its Parquet files on it (paths + sizes) in name order, listed once.

    `path` is a local path or a URI (file://, s3://, ...; see dal_dist.fs); what Ray Data's
    `read_parquet(paths, filesystem=)` takes. A directory an unfinished ingest/synth left behind is refused.
    """
    fs, root = fsx.resolve(path)
    try:
        top = fs.get_file_info(root)
    except (OSError, pa.ArrowException) as e:
        raise DalDistError(f"{path}: cannot read the pool location: {e}") from e
    if top.type == pafs.FileType.File:
        _check_parquet_file(path, fs, top)
        return fs, [top]
    if top.type != pafs.FileType.Directory:
        raise DalDistError(f"{path}: pool not found (expected a directory of .parquet files)")
    files, stray = [], []
    for child in fsx.list_dir(path):
        if child.base_name == INCOMPLETE_MARKER:
            raise DalDistError(f"{path}: incomplete pool: the ingest or synth writing it did not finish "
                               f"({INCOMPLETE_MARKER} is there); re-run `dal-dist pool ingest` (or `pool synth`) "
                               "with this --out, it replaces the unfinished write")
        if child.base_name.startswith(("_", ".")):
            continue
        if child.type == pafs.FileType.File and child.base_name.endswith(".parquet"):
            files.append(child)
        else:
            stray.append(child.base_name)
    if not files:
        found = f"it holds {', '.join(stray[:10])}{', ...' if len(stray) > 10 else ''}" if stray else "it is empty"
        raise DalDistError(f"{path}: not a pool: no .parquet files in the directory ({found})")
    if stray:
        msg = (f"{path}: skipping {len(stray)} non-Parquet entr{'y' if len(stray) == 1 else 'ies'}: "
               f"{', '.join(stray[:10])}")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    return fs, files


def _check_parquet_file(path: str | os.PathLike, fs: pafs.FileSystem, info: pafs.FileInfo) -> None:
    """Refuse a single file given as a pool that is not Parquet (a file named *.parquet is read as one)."""
    if info.base_name.endswith((".parquet", ".pq")):
        return
    try:
        with fs.open_input_file(info.path) as f:
            head = f.read(4)
    except (OSError, pa.ArrowException) as e:
        raise DalDistError(f"{path}: cannot read the pool file: {e}") from e
    if head != b"PAR1":
        raise DalDistError(f"{path}: not a pool: a file that is not Parquet "
                           "(expected a pool directory of .parquet files, or one Parquet file)")


def pool_locations(path: str | os.PathLike, infos: list[pafs.FileInfo]) -> list[str]:
    """Locations of listed files, of the same kind as `path` (local paths for a local pool, else URIs)."""
    if fsx.is_local(path) is not None:
        return [i.path for i in infos]
    if len(infos) == 1 and infos[0].path == fsx.resolve(path)[1]:  # the pool is one file
        return [str(path)]
    return [fsx.join(path, i.base_name) for i in infos]


def pool_files(path: str | os.PathLike) -> list[str]:
    """Sorted Parquet files of a pool directory (or the file itself), so every reader agrees on order.

    Locations of the same kind as `path`: local paths for a local pool, URIs for a URI (file:// gives paths).
    """
    return pool_locations(path, pool_listing(path)[1])


def read_pool_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The optional `_dal_pool.json` of a pool directory ({} when absent)."""
    meta_path = fsx.join(path if fsx.is_dir(path) else fsx.parent(path), META_FILE)
    if not fsx.is_file(meta_path):
        return {}
    try:
        meta = json.loads(fsx.read_bytes(meta_path))
    except (OSError, ValueError) as e:
        raise DalDistError(f"{meta_path}: not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise DalDistError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    check_meta(meta_path, meta)
    return meta


def check_meta(meta_path: str, meta: dict[str, Any]) -> None:
    """Refuse a `_dal_pool.json` whose known fields have the wrong type (readers use them as numbers)."""
    for key, low in META_INT_FIELDS.items():
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise DalDistError(f"{meta_path}: field `{key}` is {_shown(value)}, "
                               f"expected an integer ≥ {low} (or null)")
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise DalDistError(f"{meta_path}: field `classes` is {_shown(classes)}, expected a list of class names")


def _shown(value: Any) -> str:
    """A JSON value as it is written in the file, cut to one short line."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def open_parquet(path: str, fs: pafs.FileSystem | None = None) -> pq.ParquetFile:
    """Open one pool file; a truncated or corrupt one is a DalDistError naming it."""
    try:
        return pq.ParquetFile(path, filesystem=fs)
    except (pa.ArrowException, OSError) as e:
        raise DalDistError(f"{path}: not a readable Parquet file (truncated or corrupt?): {e}") from e
