"""Turning datasets into pools: MNIST-style IDX files, image folders, and .npz arrays.

Structural problems of the source raise `DalDistError` naming the file before anything is published;
single rows that cannot be taken go to `_rejects.parquet` with a reason. Each ingest publishes the pool
whole (`PoolWriter`): a failure leaves nothing at --out.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from dal_dist.errors import DalDistError
from dal_dist.pool.schema import FILE_ROWS, ROW_GROUP_ROWS, SHAPE_COLUMNS, pool_schema
from dal_dist.pool.write import IngestResult, PoolWriter, num_classes_of, raw_image_batch

# ------------------------------------------------------------------------------------------ IDX
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


def _idx_labels(labels: Path) -> np.ndarray:
    """The int64 labels of an IDX label file, exactly as many as its header declares."""
    with _idx_open(labels) as f:
        (nl,) = _idx_header(labels, f, 1, "a label file")
        try:
            raw = f.read(nl + 1)
        except (OSError, EOFError) as e:
            raise DalDistError(f"{labels}: cannot read IDX data (corrupt gzip?): {e}") from e
    if len(raw) != nl:
        raise DalDistError(f"{labels}: header says {nl} labels, file holds "
                           f"{'more' if len(raw) > nl else len(raw)} bytes of labels")
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)


def ingest_mnist_idx(images: str | os.PathLike, labels: str | os.PathLike | None, out: str | os.PathLike, *,
                     chunk_rows: int = FILE_ROWS) -> IngestResult:
    """Turn MNIST-style IDX files (raw or gzipped) into a raw-pixel pool; ids are the IDX row numbers."""
    images = Path(images)  # sources are local files; `out` may be any location (dal_dist.fs)
    y = None if labels is None else _idx_labels(Path(labels))
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
            return w.close({"num_classes": num_classes_of(y), "height": hh, "width": ww, "channels": 1,
                            "source": f"mnist-idx:{images.name}"})


# --------------------------------------------------------------------------------- image folder
def _folder_entries(root: Path) -> tuple[list[tuple[Path, int | None]], list[str]]:
    """(file, label) in id order: unlabeled `root/<file>` first, then `root/<class>/**` by sorted class; classes."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    entries: list[tuple[Path, int | None]] = [
        (p, None) for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith((".", "_"))]
    for label, cls in enumerate(classes):
        for p in sorted((root / cls).rglob("*")):
            rel = p.relative_to(root / cls)
            if p.is_file() and not any(part.startswith((".", "_")) for part in rel.parts):
                entries.append((p, label))
    return entries, classes


def _folder_chunk(w: PoolWriter, root: Path, chunk: list[tuple[Path, int | None]], start: int,
                  shapes: set[tuple[int, int, int]]) -> pa.RecordBatch:
    """One row group of an image folder: encoded bytes kept (non PNG/JPEG re-encoded to PNG), bad files rejected."""
    from PIL import Image

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
    return pa.RecordBatch.from_arrays([cols.get(f.name, pa.nulls(n, f.type)) for f in w.schema], schema=w.schema)


def ingest_image_folder(root: str | os.PathLike, out: str | os.PathLike) -> IngestResult:
    """Pool from `root/<class>/<file>` (sorted class names give labels 0..C-1) and unlabeled `root/<file>`.

    Files keep their encoded bytes (PNG/JPEG as is; other formats re-encoded to PNG) and their
    relative path in a `path` column; files that do not decode become rejects. Ids follow sorted paths.
    """
    root = Path(root)
    if not root.is_dir():
        raise DalDistError(f"{root}: image folder not found")
    entries, classes = _folder_entries(root)
    if not entries:
        raise DalDistError(f"{root}: no image files (expected class sub-folders of images, or images)")
    schema = pool_schema(has_label=bool(classes), extra=[pa.field("path", pa.string())])
    shapes: set[tuple[int, int, int]] = set()
    with PoolWriter(out, schema) as w:
        for start in range(0, len(entries), ROW_GROUP_ROWS):
            w.write(_folder_chunk(w, root, entries[start:start + ROW_GROUP_ROWS], start, shapes))
        shape = dict(zip(SHAPE_COLUMNS, shapes.pop())) if len(shapes) == 1 else {}
        return w.close({"num_classes": len(classes) or None, "classes": classes, **shape,
                        "source": f"image-folder:{root.name}"})


# ------------------------------------------------------------------------------------------ npz
def _npz_arrays(file: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x as N×H×W×C, y as int64 or None) of an .npz, with its shapes, dtypes and labels checked."""
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
    return x, None if y is None else _npz_labels(file, y, x.shape[0])


def _npz_labels(file: Path, y: np.ndarray, n: int) -> np.ndarray:
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
    return y


def _npz_scale(x: np.ndarray, chunk_rows: int) -> float:
    """255 for a float array whose finite values all lie at or below 1 (read as [0, 1]), else 1."""
    if not np.issubdtype(x.dtype, np.floating):
        return 1.0
    finite_max = -np.inf
    for s in range(0, x.shape[0], chunk_rows):
        chunk = x[s:s + chunk_rows]
        finite = chunk[np.isfinite(chunk)]
        if finite.size:
            finite_max = max(finite_max, float(finite.max()))
    return 255.0 if finite_max <= 1.0 else 1.0


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
    x, y = _npz_arrays(file)
    n, hh, ww, cc = x.shape
    scale = _npz_scale(x, chunk_rows)
    schema = pool_schema(has_label=y is not None)
    with PoolWriter(out, schema) as w:
        for s in range(0, n, chunk_rows):
            px, ok, reasons = _npz_pixels(x[s:s + chunk_rows], scale)
            idx = np.arange(s, s + len(px))
            if not ok.all():
                w.reject(idx[~ok], reasons)
            w.write(raw_image_batch(idx[ok], px[ok], None if y is None else y[s:s + chunk_rows][ok], schema))
        return w.close({"num_classes": num_classes_of(y), "height": hh, "width": ww, "channels": cc,
                        "source": f"npz:{file.name}", "pixel_scale": "0..1" if scale != 1.0 else "0..255"})
