"""Helpers for the pool tests: PNG bytes of an array, a whole pool decoded, a tiny hand-written pool."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from dal_dist.pool import DECODE_COLUMNS, decode_images, iter_batches, raw_image_batch


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def decode_all(path: Path, **kw) -> tuple[np.ndarray, np.ndarray]:
    parts = [decode_images(b, **kw) for b in iter_batches(path, DECODE_COLUMNS)]
    assert all(len(p.reject_ids) == 0 for p in parts)
    return np.concatenate([p.ids for p in parts]), np.concatenate([p.images for p in parts])


def tiny_pool(path: Path, ids: list[int]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    n = len(ids)
    batch = raw_image_batch(np.array(ids), np.zeros((n, 2, 2, 1), np.uint8), np.zeros(n, np.int64))
    pq.write_table(pa.Table.from_batches([batch]), path / f"part-{ids[0]:05d}.parquet")
    return path
