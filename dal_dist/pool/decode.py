"""Decoding pool rows to dense uint8 N×H×W×C pixels; rows that cannot be decoded become rejects with a reason.

Raw rows (`height`/`width`/`channels` set) are sliced out of the Arrow buffer, vectorised when they already
have the target shape; encoded rows (PNG/JPEG) go through PIL and are read at 8 bits per channel (`as_8bit`:
16-bit grey scaled by x >> 8, never clipped). Every row is brought to one target shape (PIL mode conversion,
bilinear resize), so a batch is one array.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from dal_dist.pool.schema import SHAPE_COLUMNS

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


@dataclass
class DecodedBatch:
    """Images of one batch as a dense uint8 NHWC array, plus the rows that could not be decoded."""

    ids: np.ndarray  # int64 (n,)
    images: np.ndarray  # uint8 (n, H, W, C)
    labels: np.ndarray | None  # int64 (n,), -1 where the label is null; None without a label column
    reject_ids: np.ndarray  # int64 (r,)
    reject_reasons: list[str]


@dataclass
class _Rows:
    """Per-row facts of one batch before any pixel is decoded: where the bytes are and what they hold."""

    offsets: np.ndarray  # int64 (n + 1,) byte offsets into `data`
    data: np.ndarray  # uint8 data buffer of the `image` column (not copied)
    h: np.ndarray  # int64 raw shape per row (0 where not raw)
    w: np.ndarray
    c: np.ndarray
    good_raw: np.ndarray  # bool: raw pixels with a valid shape and the matching byte count
    encoded: np.ndarray  # bool: encoded bytes (PNG/JPEG) still to be opened
    reasons: dict[int, str]  # row index -> why it is rejected


# ------------------------------------------------------------------------------------------ input
def as_record_batch(batch: pa.RecordBatch | pa.Table | Mapping[str, Any]) -> pa.RecordBatch:
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


def triage(rb: pa.RecordBatch) -> _Rows:
    """Sort rows into raw, encoded and rejected (null image, partly-null or invalid shape, wrong byte count)."""
    n = rb.num_rows
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
    return _Rows(offsets, data, h, w, c, good_raw=raw & valid & ~bad_shape & ~bad_len,
                 encoded=valid & ~raw & ~partial, reasons=reasons)


# --------------------------------------------------------------------------------------- pixels
class PixelValueError(ValueError):
    """Pixels that decode but have no 8-bit reading (NaN/inf floats, values outside the accepted range)."""


def _grey_16bit(arr: np.ndarray) -> np.ndarray:
    """16-bit grey values (0..65535) as 8 bits, proportionally (x >> 8): 16-bit full scale maps to 8-bit full scale."""
    return (arr.astype(np.uint32) >> 8).astype(np.uint8)


def _int32_to_8bit(arr: np.ndarray) -> np.ndarray:
    """32-bit integer grey (Pillow mode I) read as 16-bit: values must lie in [0, 65535]."""
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
        raise PixelValueError(f"32-bit integer pixels {int(arr.min())}..{int(arr.max())} outside [0, 65535] "
                              "(integer grey images are read as 16-bit)")
    return _grey_16bit(arr)


def _float_to_8bit(arr: np.ndarray) -> np.ndarray:
    """32-bit float grey (Pillow mode F): [0, 1] scaled by 255, else [0, 255] taken as is, then rounded."""
    if not arr.size:
        return arr.astype(np.uint8)
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise PixelValueError("32-bit float pixels with NaN/inf values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 1:
        arr = arr * 255.0
    elif not (lo >= 0 and hi <= 255):
        raise PixelValueError(f"32-bit float pixels {lo:g}..{hi:g} outside [0, 1] and [0, 255]")
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def as_8bit(pil: Any) -> Any:
    """The image in L, RGB or RGBA, so every pixel reads as 0..255 whatever the file's depth or mode.

    16-bit grey (PNG/TIFF `I;16*`) is scaled proportionally (x >> 8), 32-bit integer grey is read as 16-bit,
    32-bit float grey as [0, 1] (times 255) or [0, 255]; palette, CMYK, LAB, ... are converted by PIL.
    Raises PixelValueError (with the reason) for pixels that have no 8-bit reading.
    """
    from PIL import Image

    mode = pil.mode
    if mode in ("L", "RGB", "RGBA"):
        return pil
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(pil)
        grey = (_grey_16bit(arr) if mode.startswith("I;16") else
                _int32_to_8bit(arr) if mode == "I" else _float_to_8bit(arr))
        return Image.fromarray(grey, "L")
    try:
        if mode == "P":  # palette: colours (and maybe transparency) live in the palette
            return pil.convert("RGBA" if "transparency" in pil.info else "RGB")
        bands = pil.getbands()
        if len(bands) <= 2 and bands[0] in ("L", "1"):  # grey, maybe with alpha (dropped)
            return pil.convert("L")
        return pil.convert("RGBA" if "A" in bands else "RGB")
    except (ValueError, OSError) as e:
        raise PixelValueError(f"cannot convert mode {mode} to 8-bit L/RGB/RGBA ({e})") from e


def open_image(blob: bytes) -> Any:
    """The decoded PIL image of encoded bytes, as they are (mode and depth of the file); raises when corrupt."""
    from PIL import Image

    pil = Image.open(io.BytesIO(blob))
    pil.load()
    return pil


def _open_encoded(blob: bytes, i: int, reasons: dict[int, str]) -> Any | None:
    """Row `i`'s encoded bytes as an 8-bit PIL image, or None with the reason recorded."""
    try:
        pil = open_image(blob)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad row
        reasons[i] = f"image: corrupt PNG/JPEG bytes ({e})"
        return None
    try:
        return as_8bit(pil)
    except PixelValueError as e:
        reasons[i] = f"image: {e}"
        return None


def pil_of_pixels(img: np.ndarray) -> Any:
    """A PIL image of HWC uint8 pixels (1, 3 or 4 channels)."""
    from PIL import Image

    c = img.shape[2]
    if c not in _MODES:
        raise ValueError(f"{c} channels cannot be converted (expected 1, 3 or 4)")
    return Image.fromarray(img[:, :, 0] if c == 1 else img, _MODES[c])


def _fit(pil: Any, size: tuple[int, int], channels: int) -> np.ndarray:
    """One PIL image as uint8 (H, W, C) = (*size, channels): mode conversion, then bilinear resize."""
    from PIL import Image

    if pil.mode != _MODES[channels]:
        pil = pil.convert(_MODES[channels])
    if (pil.height, pil.width) != tuple(size):
        pil = pil.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(pil, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _target_shape(rb: pa.RecordBatch, rows: _Rows, size: tuple[int, int] | None,
                  channels: int | None) -> tuple[tuple[int, int, int], dict[int, Any]]:
    """The (H, W, C) every row is brought to: as asked, else the first decodable row's.

    Also returns the encoded rows opened on the way (row index -> PIL image), so none is decoded twice.
    """
    opened: dict[int, Any] = {}
    first: tuple[int, int, int] | None = None
    if size is None or channels is None:
        for i in range(rb.num_rows):
            if rows.good_raw[i]:
                first = (int(rows.h[i]), int(rows.w[i]), int(rows.c[i]))
                break
            if rows.encoded[i]:
                pil = _open_encoded(rb.column("image")[i].as_py(), i, rows.reasons)
                if pil is None:
                    rows.encoded[i] = False
                    continue
                opened[i] = pil
                first = (pil.height, pil.width, len(pil.getbands()))
                break
    th, tw = size if size is not None else (first[:2] if first else (0, 0))
    tc = channels if channels is not None else (first[2] if first else 0)
    return (th, tw, tc), opened


def _gather_raw(rows: _Rows, target: tuple[int, int, int], images: np.ndarray, ok: np.ndarray) -> None:
    """Fill `images` from raw rows: those of the target shape in one gather from the Arrow buffer, the rest via PIL."""
    th, tw, tc = target
    h, w, c, offsets, data = rows.h, rows.w, rows.c, rows.offsets, rows.data
    fast = rows.good_raw & (h == th) & (w == tw) & (c == tc)
    if fast.any():
        n = len(images)
        row_bytes = th * tw * tc
        idx = np.flatnonzero(fast)
        starts = offsets[idx]
        if len(idx) == n and np.all(np.diff(starts) == row_bytes):
            images[:] = data[starts[0]: starts[0] + n * row_bytes].reshape(n, th, tw, tc)
        else:
            gather = starts[:, None] + np.arange(row_bytes)[None, :]
            images[idx] = data[gather].reshape(len(idx), th, tw, tc)
        ok[idx] = True
    for i in np.flatnonzero(rows.good_raw & ~fast):
        img = data[offsets[i]: offsets[i + 1]].reshape(int(h[i]), int(w[i]), int(c[i]))
        try:
            images[i] = _fit(pil_of_pixels(img), (th, tw), tc)
            ok[i] = True
        except Exception as e:  # noqa: BLE001
            rows.reasons[int(i)] = f"image: cannot convert raw {h[i]}*{w[i]}*{c[i]} pixels to {th}*{tw}*{tc} ({e})"


def _decode_encoded(rb: pa.RecordBatch, rows: _Rows, target: tuple[int, int, int], opened: dict[int, Any],
                    images: np.ndarray, ok: np.ndarray) -> None:
    """Fill `images` from encoded rows (PIL decode, convert, resize); failures become reasons."""
    th, tw, tc = target
    col = rb.column("image")
    for i in np.flatnonzero(rows.encoded):
        i = int(i)
        pil = opened.pop(i) if i in opened else _open_encoded(col[i].as_py(), i, rows.reasons)
        if pil is None:
            continue
        try:
            images[i] = _fit(pil, (th, tw), tc)
            ok[i] = True
        except Exception as e:  # noqa: BLE001
            rows.reasons[i] = f"image: cannot convert {pil.mode} {pil.height}*{pil.width} to {th}*{tw}*{tc} ({e})"


# ----------------------------------------------------------------------------------------- public
def decode_images(batch: pa.RecordBatch | pa.Table | Mapping[str, Any], size: tuple[int, int] | None = None,
                  channels: int | None = None) -> DecodedBatch:
    """Decode a batch to uint8 NHWC; bad rows become rejects with a reason, never an exception.

    Rows are brought to `size` (H, W) and `channels` when given, else to the first decodable row's
    shape (PIL bilinear resize, PIL mode conversion). Raw rows of one shape that already match the
    target are sliced out of the Arrow buffer in one vectorised step: no per-row Python work.
    """
    rb = as_record_batch(batch)
    n = rb.num_rows
    ids_col = rb.column("id")
    ids = np.asarray(ids_col.fill_null(-1) if ids_col.null_count else ids_col, dtype=np.int64)
    rows = triage(rb)
    target, opened = _target_shape(rb, rows, size, channels)
    images = np.empty((n, *target), dtype=np.uint8)
    ok = np.zeros(n, bool)
    _gather_raw(rows, target, images, ok)
    _decode_encoded(rb, rows, target, opened, images, ok)
    labels = None
    if "label" in rb.schema.names:
        lab = rb.column("label")
        labels = np.asarray(lab.fill_null(-1) if lab.null_count else lab, dtype=np.int64)[ok]
    if ok.all():
        return DecodedBatch(ids, images, labels, np.zeros(0, np.int64), [])
    rej = sorted(rows.reasons)
    return DecodedBatch(ids[ok], images[ok], labels, ids[rej].astype(np.int64), [rows.reasons[i] for i in rej])


def decode_to_shape(batch: pa.RecordBatch | pa.Table | Mapping[str, Any],
                    shape: tuple[int, int, int] | None) -> DecodedBatch:
    """Decode a batch to an (H, W, C) `shape` (a pool's `image_shape`), or to its first decodable row's when None."""
    if shape is None:
        return decode_images(batch)
    return decode_images(batch, size=shape[:2], channels=shape[2])
