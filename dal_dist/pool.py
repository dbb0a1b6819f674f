"""Parquet image pool: schema, validation, streaming reads, image decoding, writing, ingest and info.

A pool is a directory of `*.parquet` files (read in name order) with columns `id` (int64, unique),
`image` (encoded PNG/JPEG bytes, or raw uint8 HWC pixels when `height`/`width`/`channels` are set),
optional `label` (int64 ground truth) and any extra metadata. See docs/architecture.md, "Pool".
Structural problems raise `DalDistError` before any work; rows that cannot be decoded become rejects.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import pyarrow.fs as pafs

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError

log = logging.getLogger(__name__)

META_FILE = "_dal_pool.json"
REJECTS_FILE = "_rejects.parquet"
POOL_FORMAT = "dal-dist-pool/1"
FILE_ROWS = 65_536  # rows per Parquet file written by ingest/synth
ROW_GROUP_ROWS = 4_096  # rows per row group: the unit a streaming reader holds in memory
SHAPE_COLUMNS = ("height", "width", "channels")
DECODE_COLUMNS = ("id", "image", *SHAPE_COLUMNS)  # what decode_images needs; absent optional ones are skipped
OPTIONAL_COLUMNS = frozenset({*SHAPE_COLUMNS, "label"})
REJECTS_SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("reason", pa.string())])


# ----------------------------------------------------------------------------------------- files
def pool_listing(path: str | os.PathLike) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The pool's filesystem and its Parquet files on it (paths + sizes) in name order, listed once.

    `path` is a local path or a URI (file://, s3://, ...; see dal_dist.fs); what Ray Data's
    `read_parquet(paths, filesystem=)` takes.
    """
    fs, root = fsx.resolve(path)
    try:
        top = fs.get_file_info(root)
    except (OSError, pa.ArrowException) as e:
        raise DalDistError(f"{path}: cannot read the pool location: {e}") from e
    if top.type == pafs.FileType.File:
        return fs, [top]
    if top.type != pafs.FileType.Directory:
        raise DalDistError(f"{path}: pool not found (expected a directory of .parquet files)")
    files, stray = [], []
    for child in fsx.list_dir(path):
        if child.base_name.startswith(("_", ".")):
            continue
        if child.type == pafs.FileType.File and child.base_name.endswith(".parquet"):
            files.append(child)
        else:
            stray.append(child.base_name)
    if stray:
        msg = (f"{path}: skipping {len(stray)} non-Parquet entr{'y' if len(stray) == 1 else 'ies'}: "
               f"{', '.join(stray[:10])}")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    if not files:
        raise DalDistError(f"{path}: no .parquet files in the pool directory")
    return fs, files


def pool_files(path: str | os.PathLike) -> list[str]:
    """Sorted Parquet files of a pool directory (or the file itself), so every reader agrees on order.

    Locations of the same kind as `path`: local paths for a local pool, URIs for a URI (file:// gives paths).
    """
    return _locations(path, pool_listing(path)[1])


def _locations(path: str | os.PathLike, infos: list[pafs.FileInfo]) -> list[str]:
    if fsx.is_local(path) is not None:
        return [i.path for i in infos]
    if len(infos) == 1 and infos[0].path == fsx.resolve(path)[1]:  # the pool is one file
        return [str(path)]
    return [fsx.join(path, i.base_name) for i in infos]


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
    return meta


def _open(path: str, fs: pafs.FileSystem | None = None) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path, filesystem=fs)
    except (pa.ArrowException, OSError) as e:
        raise DalDistError(f"{path}: not a readable Parquet file (truncated or corrupt?): {e}") from e


# ------------------------------------------------------------------------------------ validation
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


def _field_types(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


def _check_schema(path: str, schema: pa.Schema) -> None:
    names = schema.names
    if "id" not in names:
        raise DalDistError(f"{path}: missing column `id` (expected int64 image ids); columns: {names}")
    if not pa.types.is_integer(schema.field("id").type):
        raise DalDistError(f"{path}: column `id` has type {schema.field('id').type}, expected int64")
    if "image" not in names:
        raise DalDistError(f"{path}: missing column `image` (expected binary PNG/JPEG or raw pixels); columns: {names}")
    t = schema.field("image").type
    if not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        raise DalDistError(f"{path}: column `image` has type {t}, expected binary")
    for name in (*SHAPE_COLUMNS, "label"):
        if name in names and not pa.types.is_integer(schema.field(name).type):
            raise DalDistError(f"{path}: column `{name}` has type {schema.field(name).type}, expected integers")


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
    files = _locations(path, infos)
    meta = read_pool_meta(path)
    pfs = [_open(i.path, fs) for i in infos]
    schema = pfs[0].schema_arrow
    _check_schema(files[0], schema)
    for f, pf in zip(files[1:], pfs[1:]):
        if _field_types(pf.schema_arrow) != _field_types(schema):
            a, b = dict(_field_types(schema)), dict(_field_types(pf.schema_arrow))
            diff = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
            detail = "; ".join(f"`{n}`: {a.get(n, 'absent')} in {fsx.basename(files[0])} vs {b.get(n, 'absent')}"
                               for n in diff) or "column order differs"
            raise DalDistError(f"{f}: schema differs from {files[0]}: {detail}")
    has_label = "label" in schema.names
    # Duplicate-id check: O(N) int64 memory for the ids (8 MB per million rows) plus an int32 file index.
    ids_parts, file_parts = [], []
    label_counts = np.zeros(0, dtype=np.int64)
    unlabeled = 0
    for i, (f, pf) in enumerate(zip(files, pfs)):
        cols = ["id", "label"] if has_label else ["id"]
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
            values = lab.drop_null().to_numpy().astype(np.int64, copy=False)
            if len(values) and values.min() < 0:
                bad = int(np.asarray(col.filter(pc.less(lab, 0)))[0])
                raise DalDistError(f"{f}: column `label` has negative value {values.min()} (id {bad}); "
                                   "expected class indices 0..C-1, null for unknown")
            counts = np.bincount(values)
            if len(counts) > len(label_counts):
                label_counts = np.pad(label_counts, (0, len(counts) - len(label_counts)))
            label_counts[: len(counts)] += counts
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64)
    file_of = np.concatenate(file_parts) if file_parts else np.zeros(0, np.int32)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(dup):
        example = int(sorted_ids[dup[0]])
        where = sorted({files[j] for j in file_of[ids == example]})
        raise DalDistError(f"column `id`: {len(dup)} duplicate id(s), e.g. id {example} appears "
                           f"{int((ids == example).sum())} times in {', '.join(where)}")
    num_classes = meta.get("num_classes")
    if num_classes is None and has_label and len(label_counts):
        num_classes = int(len(label_counts))
    shape = _uniform_shape(pfs, schema)
    if shape is None and all(meta.get(k) for k in SHAPE_COLUMNS):
        shape = (int(meta["height"]), int(meta["width"]), int(meta["channels"]))
    return PoolInfo(
        path=str(path), files=files, rows=int(len(ids)), bytes=sum(int(i.size or 0) for i in infos),
        schema=schema, has_label=has_label, num_classes=None if num_classes is None else int(num_classes),
        image_shape=shape, label_counts={i: int(c) for i, c in enumerate(label_counts) if c},
        unlabeled_rows=int(unlabeled), meta=meta,
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


# --------------------------------------------------------------------------------------- reading
def iter_batches(path: str | os.PathLike, columns: Sequence[str] | None = None,
                 batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
    """Stream a pool file by file in name order; memory is one batch, whatever the pool size.

    Requested optional columns (`height`, `width`, `channels`, `label`) that a pool lacks are skipped,
    so `columns=DECODE_COLUMNS` works for encoded and raw pools alike; other missing columns are an error.
    """
    fs, infos = pool_listing(path)
    for f, info in zip(_locations(path, infos), infos):
        pf = _open(info.path, fs)
        cols = None
        if columns is not None:
            names = pf.schema_arrow.names
            missing = [c for c in columns if c not in names and c not in OPTIONAL_COLUMNS]
            if missing:
                raise DalDistError(f"{f}: missing column(s) {missing}; columns: {names}")
            cols = [c for c in columns if c in names]
        try:
            yield from pf.iter_batches(batch_size=batch_size, columns=cols)
        except (pa.ArrowException, OSError) as e:
            raise DalDistError(f"{f}: cannot read (truncated or corrupt?): {e}") from e


# -------------------------------------------------------------------------------------- decoding
@dataclass
class DecodedBatch:
    """Images of one batch as a dense uint8 NHWC array, plus the rows that could not be decoded."""

    ids: np.ndarray  # int64 (n,)
    images: np.ndarray  # uint8 (n, H, W, C)
    labels: np.ndarray | None  # int64 (n,), -1 where the label is null; None without a label column
    reject_ids: np.ndarray  # int64 (r,)
    reject_reasons: list[str]


_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _as_record_batch(batch: pa.RecordBatch | pa.Table | Mapping[str, Any]) -> pa.RecordBatch:
    """Accept what Ray Data hands a map_batches callable: pyarrow, pandas or a dict of numpy arrays."""
    if isinstance(batch, pa.RecordBatch):
        return batch
    if isinstance(batch, pa.Table):
        if batch.num_rows == 0:
            return pa.RecordBatch.from_pylist([], schema=batch.schema)
        return batch.combine_chunks().to_batches()[0]
    if not isinstance(batch, Mapping):  # pandas DataFrame
        return pa.RecordBatch.from_pandas(batch, preserve_index=False)
    columns = {}
    for name, values in batch.items():
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        elif not isinstance(values, pa.Array):
            if isinstance(values, np.ndarray) and values.dtype == object:
                values = list(values)  # bytes objects (and None) -> binary
            values = pa.array(values, from_pandas=True)  # NaN -> null, as pandas/numpy batches encode it
        columns[name] = values
    return pa.RecordBatch.from_pydict(columns)


def _int_column(rb: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(values with nulls as 0, valid mask) of an integer column, or None when absent."""
    if name not in rb.schema.names:
        return None
    col = rb.column(name)
    if not pa.types.is_int64(col.type):
        col = col.cast(pa.int64())  # float columns from numpy/pandas batches: exact for whole numbers
    valid = np.ones(len(col), bool) if col.null_count == 0 else ~np.asarray(col.is_null(), dtype=bool)
    values = np.asarray(col.fill_null(0) if col.null_count else col, dtype=np.int64)
    return values, valid


def _binary_buffers(col: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, data bytes, valid mask) of a binary column without copying the data."""
    bufs = col.buffers()
    off_dtype = np.int64 if pa.types.is_large_binary(col.type) else np.int32
    itemsize = np.dtype(off_dtype).itemsize
    offsets = np.frombuffer(bufs[1], dtype=off_dtype, count=len(col) + 1, offset=col.offset * itemsize)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    valid = np.ones(len(col), bool) if col.null_count == 0 else ~np.asarray(col.is_null(), dtype=bool)
    return offsets.astype(np.int64), data, valid


def _to_target(img: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """Bring one HWC uint8 image to (H, W, C) with PIL: the slow path for odd rows."""
    from PIL import Image

    c = img.shape[2]
    if c not in _MODES:
        raise ValueError(f"{c} channels cannot be converted (expected 1, 3 or 4)")
    pil = Image.fromarray(img[:, :, 0] if c == 1 else img, _MODES[c])
    return _pil_to_target(pil, size, channels)


def _pil_to_target(pil: Any, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image

    if pil.mode != _MODES[channels]:
        pil = pil.convert(_MODES[channels])
    if (pil.height, pil.width) != tuple(size):
        pil = pil.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(pil, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _open_encoded(blob: bytes) -> Any:
    from PIL import Image

    pil = Image.open(io.BytesIO(blob))
    pil.load()
    if pil.mode in ("L", "RGB", "RGBA"):
        return pil
    if pil.mode == "P":  # palette: colours (and maybe transparency) live in the palette
        return pil.convert("RGBA" if "transparency" in pil.info else "RGB")
    bands = pil.getbands()
    if len(bands) <= 2 and bands[0] in ("L", "1", "I", "F"):  # grey, maybe with alpha (dropped)
        return pil.convert("L")
    return pil.convert("RGBA" if "A" in bands else "RGB")


def decode_images(batch: pa.RecordBatch | pa.Table | Mapping[str, Any], size: tuple[int, int] | None = None,
                  channels: int | None = None) -> DecodedBatch:
    """Decode a batch to uint8 NHWC; bad rows become rejects with a reason, never an exception.

    Rows are brought to `size` (H, W) and `channels` when given, else to the first decodable row's
    shape (PIL bilinear resize, PIL mode conversion). Raw rows of one shape that already match the
    target are sliced out of the Arrow buffer in one vectorised step: no per-row Python work.
    """
    rb = _as_record_batch(batch)
    n = rb.num_rows
    ids_col = rb.column("id")
    ids = np.asarray(ids_col.fill_null(-1) if ids_col.null_count else ids_col, dtype=np.int64)
    offsets, data, valid = _binary_buffers(rb.column("image"))
    lengths = np.diff(offsets)
    hwc = [_int_column(rb, c) for c in SHAPE_COLUMNS]
    if all(x is not None for x in hwc):
        h, w, c = (x[0] for x in hwc)  # type: ignore[index]
        shape_valid = np.stack([x[1] for x in hwc])  # type: ignore[index]
        raw = shape_valid.all(axis=0)
        partial = shape_valid.any(axis=0) & ~raw
    else:
        h = w = c = np.zeros(n, np.int64)
        raw = partial = np.zeros(n, bool)
    expected = h * w * c
    reasons: dict[int, str] = {}
    for i in np.flatnonzero(~valid):
        reasons[int(i)] = "image: null"
    for i in np.flatnonzero(partial & valid):
        reasons[int(i)] = "height/width/channels: partly null (all three set for raw pixels, all null for encoded)"
    bad_shape = raw & valid & ((h <= 0) | (w <= 0) | (c <= 0))
    for i in np.flatnonzero(bad_shape):
        reasons[int(i)] = f"height/width/channels: invalid raw shape {h[i]}*{w[i]}*{c[i]}"
    bad_len = raw & valid & ~bad_shape & (lengths != expected)
    for i in np.flatnonzero(bad_len):
        reasons[int(i)] = f"image: {lengths[i]} bytes, expected {h[i]}*{w[i]}*{c[i]}={expected[i]}"
    good_raw = raw & valid & ~bad_shape & ~bad_len
    encoded = valid & ~raw & ~partial

    # Target shape: as asked, else the first decodable row's.
    pils: dict[int, Any] = {}
    first_shape: tuple[int, int, int] | None = None
    if size is None or channels is None:
        for i in range(n):
            if good_raw[i]:
                first_shape = (int(h[i]), int(w[i]), int(c[i]))
                break
            if encoded[i]:
                try:
                    pil = _open_encoded(rb.column("image")[i].as_py())
                except Exception as e:  # noqa: BLE001 - any decoder failure is a bad row
                    reasons[i] = f"image: corrupt PNG/JPEG bytes ({e})"
                    encoded[i] = False
                    continue
                pils[i] = pil
                first_shape = (pil.height, pil.width, len(pil.getbands()))
                break
    th, tw = size if size is not None else (first_shape[:2] if first_shape else (0, 0))
    tc = channels if channels is not None else (first_shape[2] if first_shape else 0)
    images = np.empty((n, th, tw, tc), dtype=np.uint8)
    ok = np.zeros(n, bool)

    # Fast path: raw rows already of the target shape, gathered from the Arrow data buffer at once.
    fast = good_raw & (h == th) & (w == tw) & (c == tc)
    if fast.any():
        row_bytes = th * tw * tc
        idx = np.flatnonzero(fast)
        starts = offsets[idx]
        if len(idx) == n and np.all(np.diff(starts) == row_bytes):
            block = data[starts[0]: starts[0] + n * row_bytes]
            images[:] = block.reshape(n, th, tw, tc)
        else:
            gather = starts[:, None] + np.arange(row_bytes)[None, :]
            images[idx] = data[gather].reshape(len(idx), th, tw, tc)
        ok[idx] = True
    for i in np.flatnonzero(good_raw & ~fast):
        img = data[offsets[i]: offsets[i + 1]].reshape(int(h[i]), int(w[i]), int(c[i]))
        try:
            images[i] = _to_target(img, (th, tw), tc)
            ok[i] = True
        except Exception as e:  # noqa: BLE001
            reasons[int(i)] = f"image: cannot convert raw {h[i]}*{w[i]}*{c[i]} pixels to {th}*{tw}*{tc} ({e})"
    if encoded.any():
        col = rb.column("image")
        for i in np.flatnonzero(encoded):
            i = int(i)
            try:
                pil = pils.pop(i) if i in pils else _open_encoded(col[i].as_py())
            except Exception as e:  # noqa: BLE001
                reasons[i] = f"image: corrupt PNG/JPEG bytes ({e})"
                continue
            try:
                images[i] = _pil_to_target(pil, (th, tw), tc)
                ok[i] = True
            except Exception as e:  # noqa: BLE001
                reasons[i] = f"image: cannot convert {pil.mode} {pil.height}*{pil.width} to {th}*{tw}*{tc} ({e})"

    labels = None
    if "label" in rb.schema.names:
        lab = rb.column("label")
        labels = np.asarray(lab.fill_null(-1) if lab.null_count else lab, dtype=np.int64)[ok]
    rej = sorted(reasons)
    if ok.all():
        return DecodedBatch(ids, images, labels, np.zeros(0, np.int64), [])
    return DecodedBatch(ids[ok], images[ok], labels, ids[rej].astype(np.int64), [reasons[i] for i in rej])


# --------------------------------------------------------------------------------------- writing
def pool_schema(*, has_label: bool, extra: Sequence[pa.Field] = ()) -> pa.Schema:
    """The schema ingest and synth write: one schema for every file of a pool."""
    fields = [pa.field("id", pa.int64(), nullable=False), pa.field("image", pa.binary()),
              *(pa.field(c, pa.int32()) for c in SHAPE_COLUMNS)]
    if has_label:
        fields.append(pa.field("label", pa.int64()))
    return pa.schema([*fields, *extra])


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


@dataclass
class IngestResult:
    """What a write produced, for the CLI to report."""

    out: str
    rows: int
    rejects: int
    files: list[str]
    seconds: float = 0.0


class PoolWriter:
    """Streaming pool writer: files of FILE_ROWS rows in ROW_GROUP_ROWS row groups, each file atomic.

    Row groups depend only on row counts, never on how callers chunk their writes, so the same rows
    give the same bytes. Memory: one row group of buffered rows plus the rejects list.
    """

    def __init__(self, out: str | os.PathLike, schema: pa.Schema, *, file_rows: int = FILE_ROWS,
                 row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.out = str(out)  # a local path or a URI (dal_dist.fs): part files are published one by one
        if fsx.exists(self.out) and not fsx.is_dir(self.out):
            raise DalDistError(f"{self.out}: exists and is not a directory")
        if any(i.base_name.endswith(".parquet") or i.base_name == META_FILE for i in fsx.list_dir(self.out)):
            raise DalDistError(f"{self.out}: already holds a pool; choose a new or empty --out directory")
        fsx.make_dirs(self.out)
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
            tmp = self._stack.enter_context(fsx.atomic_output(self._part_path()))
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

    def _part_path(self) -> str:
        return fsx.join(self.out, f"part-{len(self.files):05d}.parquet")

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self.files.append(self._part_path())
            assert self._stack is not None
            self._stack.close()  # fsync + rename into place
            self._stack = None
            self._file_rows_written = 0

    def close(self, meta: Mapping[str, Any]) -> IngestResult:
        """Flush the last rows, write `_rejects.parquet` and `_dal_pool.json`; the pool is then complete."""
        while self._pending_rows:
            self._flush(min(self._pending_rows, self._next_group_rows()))
        self._close_file()
        rejects = pa.table({"id": pa.array(self._reject_ids, pa.int64()),
                            "reason": pa.array(self._reject_reasons, pa.string())}, schema=REJECTS_SCHEMA)
        fsx.write_table_atomic(fsx.join(self.out, REJECTS_FILE), rejects)
        if self.rows == 0:
            raise DalDistError(f"{self.out}: no rows could be taken ({len(self._reject_ids)} rejected, "
                               f"reasons in {fsx.join(self.out, REJECTS_FILE)})")
        fsx.write_json_atomic(fsx.join(self.out, META_FILE), {"format": POOL_FORMAT, "rows": self.rows,
                                                 "rejects": len(self._reject_ids), **meta})
        return IngestResult(str(self.out), self.rows, len(self._reject_ids), list(self.files),
                            time.perf_counter() - self._t0)

    def abort(self) -> None:
        """Drop the file being written (its temp file is removed)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._stack is not None:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._stack = None

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
        return w.close({"num_classes": _num_classes(labels), "height": hh, "width": ww, "channels": cc,
                        **(meta or {})})


def _num_classes(labels: np.ndarray | None) -> int | None:
    return int(labels.max()) + 1 if labels is not None and len(labels) else None


# ---------------------------------------------------------------------------------------- ingest
_IDX_DTYPES = {0x08: np.uint8}


def _idx_open(path: Path) -> io.BufferedIOBase:
    if not path.is_file():
        raise DalDistError(f"{path}: IDX file not found")
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")  # type: ignore[return-value]


def _idx_header(path: Path, f: io.BufferedIOBase, ndim: int, what: str) -> tuple[int, ...]:
    try:
        head = f.read(4)
    except (OSError, EOFError) as e:
        raise DalDistError(f"{path}: cannot read IDX file (corrupt gzip?): {e}") from e
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DalDistError(f"{path}: not an IDX file (magic number {head.hex() or 'missing'}, "
                           f"expected 000008{ndim:02x})")
    if head[2] not in _IDX_DTYPES or head[3] != ndim:
        raise DalDistError(f"{path}: IDX magic {head.hex()} is not {what} (expected 000008{ndim:02x}: "
                           f"unsigned bytes, {ndim} dimension(s))")
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DalDistError(f"{path}: IDX header truncated")
    return tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))


def ingest_mnist_idx(images: str | os.PathLike, labels: str | os.PathLike | None, out: str | os.PathLike, *,
                     chunk_rows: int = FILE_ROWS) -> IngestResult:
    """Turn MNIST-style IDX files (raw or gzipped) into a raw-pixel pool; ids are the IDX row numbers."""
    images = Path(images)  # sources are local files; `out` may be any location (dal_dist.fs)
    y = None
    if labels is not None:
        labels = Path(labels)
        with _idx_open(labels) as f:
            (nl,) = _idx_header(labels, f, 1, "a label file")
            try:
                raw = f.read(nl + 1)
            except (OSError, EOFError) as e:
                raise DalDistError(f"{labels}: cannot read IDX data (corrupt gzip?): {e}") from e
            if len(raw) != nl:
                raise DalDistError(f"{labels}: header says {nl} labels, file holds "
                                   f"{'more' if len(raw) > nl else len(raw)} bytes of labels")
            y = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    with _idx_open(images) as f:
        n, hh, ww = _idx_header(images, f, 3, "an image file")
        if y is not None and len(y) != n:
            raise DalDistError(f"{images}: {n} images but {labels} has {len(y)} labels (expected the same count)")
        schema = pool_schema(has_label=y is not None)
        row = hh * ww
        with PoolWriter(out, schema) as w:
            for s in range(0, n, chunk_rows):
                k = min(chunk_rows, n - s)
                try:
                    raw = f.read(k * row)
                except (OSError, EOFError) as e:
                    raise DalDistError(f"{images}: cannot read IDX data at image {s} (corrupt gzip?): {e}") from e
                if len(raw) != k * row:
                    raise DalDistError(f"{images}: truncated: header says {n} images of {hh}x{ww}, "
                                       f"data ends inside image {s + len(raw) // row}")
                px = np.frombuffer(raw, dtype=np.uint8).reshape(k, hh, ww, 1)
                w.write(raw_image_batch(np.arange(s, s + k), px, None if y is None else y[s:s + k], schema))
            if f.read(1):
                raise DalDistError(f"{images}: unexpected bytes after the {n} images the header declares")
            return w.close({"num_classes": _num_classes(y), "height": hh, "width": ww, "channels": 1,
                            "source": f"mnist-idx:{images.name}"})


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def ingest_image_folder(root: str | os.PathLike, out: str | os.PathLike) -> IngestResult:
    """Pool from `root/<class>/<file>` (sorted class names give labels 0..C-1) and unlabeled `root/<file>`.

    Files keep their encoded bytes (PNG/JPEG as is; other formats re-encoded to PNG) and their
    relative path in a `path` column; files that do not decode become rejects. Ids follow sorted paths.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise DalDistError(f"{root}: image folder not found")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    entries: list[tuple[Path, int | None]] = [
        (p, None) for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith((".", "_"))]
    for label, cls in enumerate(classes):
        for p in sorted((root / cls).rglob("*")):
            rel = p.relative_to(root / cls)
            if p.is_file() and not any(part.startswith((".", "_")) for part in rel.parts):
                entries.append((p, label))
    if not entries:
        raise DalDistError(f"{root}: no image files (expected class sub-folders of images, or images)")
    has_label = bool(classes)
    schema = pool_schema(has_label=has_label, extra=[pa.field("path", pa.string())])
    shapes: set[tuple[int, int, int]] = set()
    with PoolWriter(out, schema) as w:
        for start in range(0, len(entries), ROW_GROUP_ROWS):
            chunk = entries[start:start + ROW_GROUP_ROWS]
            ids, blobs, labels, paths = [], [], [], []
            for j, (p, label) in enumerate(chunk):
                rel = p.relative_to(root).as_posix()
                try:
                    blob = p.read_bytes()
                    pil = Image.open(io.BytesIO(blob))
                    fmt = pil.format
                    pil.load()
                except Exception as e:  # noqa: BLE001 - anything a decoder raises makes this file a reject
                    w.reject([start + j], [f"{rel}: image: corrupt PNG/JPEG bytes ({e})"])
                    continue
                if fmt not in ("PNG", "JPEG"):
                    buf = io.BytesIO()
                    pil.save(buf, format="PNG")
                    blob = buf.getvalue()
                shapes.add((pil.height, pil.width, len(pil.getbands())))
                ids.append(start + j)
                blobs.append(blob)
                labels.append(label)
                paths.append(rel)
            n = len(ids)
            cols = {"id": pa.array(ids, pa.int64()), "image": pa.array(blobs, pa.binary()),
                    "label": pa.array(labels, pa.int64()), "path": pa.array(paths, pa.string())}
            w.write(pa.RecordBatch.from_arrays([cols.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema))
        shape = dict(zip(SHAPE_COLUMNS, shapes.pop())) if len(shapes) == 1 else {}
        return w.close({"num_classes": len(classes) or None, "classes": classes, **shape,
                        "source": f"image-folder:{root.name}"})


def _npz_pixels(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 pixels, ok mask, reasons of bad rows) for one chunk of an npz `x` array."""
    n = x.shape[0]
    if x.dtype == np.uint8:
        return x, np.ones(n, bool), []
    flat = x.reshape(n, -1)
    ok = np.ones(n, bool)
    reasons = []
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(flat).all(axis=1)
        ok &= finite
    lo = np.where(ok, flat.min(axis=1), 0)
    hi = np.where(ok, flat.max(axis=1), 0)
    limit = 1.0 if scale != 1.0 else 255
    in_range = (lo >= 0) & (hi <= limit)
    for i in range(n):
        if not ok[i]:
            reasons.append("image: NaN/inf pixel values")
        elif not in_range[i]:
            reasons.append(f"image: pixel values {lo[i]}..{hi[i]} outside [0, {limit}]")
    ok &= in_range
    safe = np.where(ok.reshape((n,) + (1,) * (x.ndim - 1)), x, 0)
    px = np.clip(np.rint(safe.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return px, ok, reasons


def ingest_npz(file: str | os.PathLike, out: str | os.PathLike, *, chunk_rows: int = FILE_ROWS) -> IngestResult:
    """Pool from an .npz with `x` (N×H×W or N×H×W×C, C in 1/3/4) and optional integer `y` (N,).

    Pixel rule: uint8 taken as is; integer arrays must lie in [0, 255]; float arrays are read as
    [0, 1] when every finite value is ≤ 1 and as [0, 255] otherwise (one rule for the whole array, so
    a dark image is not rescaled alone), then rounded. Rows with NaN/inf or out-of-range pixels are
    rejected. The arrays are loaded whole (npz members cannot be memory-mapped).
    """
    file = Path(file)
    if not file.is_file():
        raise DalDistError(f"{file}: npz file not found")
    try:
        npz = np.load(file, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise DalDistError(f"{file}: not a readable .npz file: {e}") from e
    with npz:
        if not hasattr(npz, "files"):
            raise DalDistError(f"{file}: expected an .npz archive with array `x`, got a single array")
        if "x" not in npz.files:
            raise DalDistError(f"{file}: missing array `x` (N×H×W or N×H×W×C images); arrays: {npz.files}")
        try:
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
        except Exception as e:  # noqa: BLE001
            raise DalDistError(f"{file}: cannot read arrays: {e}") from e
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3, 4):
        hint = " (looks channels-first: transpose to N×H×W×C)" if x.ndim == 4 and x.shape[1] in (1, 3, 4) else ""
        raise DalDistError(f"{file}: array `x` has shape {x.shape}, "
                           f"expected N×H×W or N×H×W×C with C in 1/3/4{hint}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DalDistError(f"{file}: array `x` has dtype {x.dtype}, expected uint8, integers or floats")
    n = x.shape[0]
    if y is not None:
        if y.shape != (n,):
            raise DalDistError(f"{file}: array `y` has shape {y.shape}, expected ({n},) to match `x`")
        if np.issubdtype(y.dtype, np.floating):
            if not (np.isfinite(y).all() and (y == np.round(y)).all()):
                raise DalDistError(f"{file}: array `y` has non-integer values, expected class indices")
        elif not np.issubdtype(y.dtype, np.integer):
            raise DalDistError(f"{file}: array `y` has dtype {y.dtype}, expected integers")
        y = y.astype(np.int64)
        if n and y.min() < 0:
            raise DalDistError(f"{file}: array `y` has negative label {y.min()} (row {int(np.argmin(y))}), "
                               "expected 0..C-1")
    scale = 1.0
    if np.issubdtype(x.dtype, np.floating):
        finite_max = -np.inf
        for s in range(0, n, chunk_rows):
            chunk = x[s:s + chunk_rows]
            finite = chunk[np.isfinite(chunk)]
            if finite.size:
                finite_max = max(finite_max, float(finite.max()))
        if finite_max <= 1.0:
            scale = 255.0
    schema = pool_schema(has_label=y is not None)
    _, hh, ww, cc = x.shape
    with PoolWriter(out, schema) as w:
        for s in range(0, n, chunk_rows):
            px, ok, reasons = _npz_pixels(x[s:s + chunk_rows], scale)
            idx = np.arange(s, s + len(px))
            if not ok.all():
                w.reject(idx[~ok], reasons)
            w.write(raw_image_batch(idx[ok], px[ok], None if y is None else y[s:s + chunk_rows][ok], schema))
        return w.close({"num_classes": _num_classes(y), "height": hh, "width": ww, "channels": cc,
                        "source": f"npz:{file.name}", "pixel_scale": "0..1" if scale != 1.0 else "0..255"})


def synth_pool(n: int, out: str | os.PathLike, seed: int = 0, **kwargs: Any) -> IngestResult:
    """A large pool of deformed MNIST-style digits for scale runs (see dal_dist.pool_synth)."""
    from dal_dist.pool_synth import synth_pool as _synth

    return _synth(n, out, seed=seed, **kwargs)


__all__ = [
    "DECODE_COLUMNS", "DecodedBatch", "IngestResult", "PoolInfo", "PoolWriter", "decode_images",
    "ingest_image_folder", "ingest_mnist_idx", "ingest_npz", "iter_batches", "pool_files", "pool_info",
    "pool_schema", "raw_image_batch", "read_pool_meta", "synth_pool", "validate_pool", "write_pool",
]
