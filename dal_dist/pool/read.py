"""Reading a pool: streaming record batches file by file, and decoded images of chosen ids or of a whole test pool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dal_dist.errors import DalDistError
from dal_dist.pool.decode import DecodedBatch, decode_to_shape
from dal_dist.pool.listing import open_parquet, pool_listing, pool_locations
from dal_dist.pool.photo import decode_photos
from dal_dist.pool.schema import DECODE_COLUMNS, OPTIONAL_COLUMNS


def iter_batches(path: str | os.PathLike, columns: Sequence[str] | None = None,
                 batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
    """Stream a pool file by file in name order; memory is one batch, whatever the pool size.

    Requested optional columns (`height`, `width`, `channels`, `label`) that a pool lacks are skipped,
    so `columns=DECODE_COLUMNS` works for encoded and raw pools alike; other missing columns are an error.
    """
    fs, infos = pool_listing(path)
    for f, info in zip(pool_locations(path, infos), infos):
        pf = open_parquet(info.path, fs)
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


def _decode(rb: pa.RecordBatch, shape: tuple[int, int, int] | None, photo: bool) -> DecodedBatch:
    """A batch decoded to `shape`; with `photo`, each row on its own by the photo transform to the square `shape`."""
    if photo:
        if shape is None or shape[0] != shape[1]:
            raise DalDistError(f"photo decoding needs a square (size, size, channels) shape, got {shape}")
        return decode_photos(rb, shape[0], shape[2])
    return decode_to_shape(rb, shape)


def read_images(pool: Path | str, ids: np.ndarray, shape: tuple[int, int, int] | None,
                photo: bool = False) -> np.ndarray:
    """uint8 N×H×W×C images of `ids` in that order (one streaming pass; labels are not read).

    `photo`: a pool of mixed sizes, every image brought to the model's square `shape` on its own
    (resize shorter side + centre crop, `photo_transform`), so nothing is stretched or stacked unequal.
    """
    ids = np.asarray(ids, dtype=np.int64)
    want = pa.array(np.unique(ids))
    found: dict[int, np.ndarray] = {}
    for rb in iter_batches(pool, columns=DECODE_COLUMNS):
        rb = rb.filter(pc.is_in(rb.column("id"), value_set=want))
        if rb.num_rows == 0:
            continue
        dec = _decode(rb, shape, photo)
        if len(dec.reject_ids):
            raise DalDistError(f"{pool}: id {int(dec.reject_ids[0])} cannot be decoded: {dec.reject_reasons[0]}")
        found.update(zip(dec.ids.tolist(), dec.images))
    missing = [int(i) for i in ids if int(i) not in found]
    if missing:
        raise DalDistError(f"{pool}: ids {missing[:5]} are not in the pool")
    return np.stack([found[int(i)] for i in ids])


def read_labeled_images(pool: Path | str, shape: tuple[int, int, int] | None,
                        photo: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every image and label of a (test) pool, decoded to `shape` (`photo`: as in `read_images`)."""
    images, labels = [], []
    for rb in iter_batches(pool, columns=(*DECODE_COLUMNS, "label")):
        dec = _decode(rb, shape, photo)
        if len(dec.reject_ids):
            raise DalDistError(f"{pool}: id {int(dec.reject_ids[0])} cannot be decoded: {dec.reject_reasons[0]}")
        if dec.labels is None or (dec.labels < 0).any():
            raise DalDistError(f"{pool}: every test image needs a label (null label found)")
        images.append(dec.images)
        labels.append(dec.labels)
    return np.concatenate(images), np.concatenate(labels)


def read_pool_labels(pool: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) of every row of a (test) pool, no image read; each row must carry a label."""
    ids, labels = [], []
    for rb in iter_batches(pool, columns=("id", "label")):
        if "label" not in rb.schema.names or rb.column("label").null_count:
            raise DalDistError(f"{pool}: every test image needs a label (a row without one found)")
        ids.append(rb.column("id").to_numpy().astype(np.int64, copy=False))
        labels.append(rb.column("label").to_numpy().astype(np.int64, copy=False))
    if not ids:
        raise DalDistError(f"{pool}: no rows")
    return np.concatenate(ids), np.concatenate(labels)
