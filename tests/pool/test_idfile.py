"""Id lists: ids that do not fit in int64 are refused by row instead of coming back negative."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.pool import read_ids


def test_uint64_id_file_is_read_when_ids_fit_and_refused_by_row_when_not(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": pa.array([3, 1], pa.uint64())}), tmp_path / "ok.parquet")
    ids = read_ids(tmp_path / "ok.parquet")
    assert ids.dtype == np.int64 and ids.tolist() == [3, 1]
    pq.write_table(pa.table({"id": pa.array([1, 2**64 - 1], pa.uint64())}), tmp_path / "big.parquet")
    with pytest.raises(DalDistError, match=r"big.parquet: column `id` has value 18446744073709551615 at row 1, "
                                           r"expected int64 ids \(below 2\^63\)"):
        read_ids(tmp_path / "big.parquet")
