"""Reading pools: optional columns a pool lacks are skipped, others are an error."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pool_helpers import png_bytes

from dal_dist.errors import DalDistError
from dal_dist.pool import (
    DECODE_COLUMNS, decode_images, iter_batches, pool_info, read_images, read_labeled_images, write_pool,
)


def test_iter_batches_skips_absent_optional_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1, 2], "image": [png_bytes(np.zeros((3, 3), np.uint8))] * 2}), tmp_path / "p.parquet")
    (batch,) = list(iter_batches(tmp_path, DECODE_COLUMNS))
    assert batch.schema.names == ["id", "image"]
    assert decode_images(batch).images.shape == (2, 3, 3, 1)
    with pytest.raises(DalDistError, match=r"missing column\(s\) \['embedding'\]"):
        list(iter_batches(tmp_path, ["id", "embedding"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pool_info(tmp_path)["label_counts"] == {}


def test_read_images_in_the_asked_order_and_labeled_images(tmp_path: Path) -> None:
    x = np.random.default_rng(7).integers(0, 256, size=(12, 3, 3, 1), dtype=np.uint8)
    y = np.arange(12) % 4
    write_pool(tmp_path / "pool", x, y, ids=np.arange(100, 112), chunk_rows=5)
    np.testing.assert_array_equal(read_images(tmp_path / "pool", np.array([111, 100, 105]), None), x[[11, 0, 5]])
    assert read_images(tmp_path / "pool", np.array([101]), (6, 6, 3)).shape == (1, 6, 6, 3)
    with pytest.raises(DalDistError, match=r"pool: ids \[7\] are not in the pool"):
        read_images(tmp_path / "pool", np.array([100, 7]), None)
    images, labels = read_labeled_images(tmp_path / "pool", None)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    write_pool(tmp_path / "unlabeled", x)
    with pytest.raises(DalDistError, match=r"unlabeled: every test image needs a label"):
        read_labeled_images(tmp_path / "unlabeled", None)
