"""Helpers for the scoring tests: real MNIST images, mixed raw/PNG pools with bad rows, a checkpoint."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ACQ = ["bald", "entropy", "margin", "least_confidence", "variation_ratio", "mean_std"]


def mnist(mnist_test_dir, n):
    """The first `n` real MNIST test images (uint8 N×28×28×1) and labels."""
    with gzip.open(mnist_test_dir / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:n]
    with gzip.open(mnist_test_dir / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n].astype(np.int64)
    return x, y


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def write_mixed_pool(path, x, y, files=3):
    """Raw-pixel rows, PNG rows, and three bad rows: corrupt PNG, short raw buffer, null image."""
    n = len(x)
    images, h, w, c = [], [], [], []
    for i in range(n):
        if i % 5 == 0:  # encoded PNG rows
            images.append(png(x[i])); h.append(None); w.append(None); c.append(None)
        else:
            images.append(x[i].tobytes()); h.append(28); w.append(28); c.append(1)
    images[7] = b"\x89PNG\r\n\x1a\nthis is not a png"; h[7] = w[7] = c[7] = None
    images[11] = x[11].tobytes()[:780]
    images[13] = None
    table = pa.table({"id": pa.array(np.arange(1000, 1000 + n), pa.int64()),
                      "image": pa.array(images, pa.binary()),
                      "height": pa.array(h, pa.int32()), "width": pa.array(w, pa.int32()),
                      "channels": pa.array(c, pa.int32()), "label": pa.array(y, pa.int64())})
    path.mkdir(parents=True)
    step = -(-n // files)
    for k in range(files):
        pq.write_table(table.slice(k * step, step), path / f"part-{k}.parquet", row_group_size=64)
    return table


def tree(path) -> dict[str, bytes]:
    """Every file under `path` (relative name -> bytes): to assert that nothing changed."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
