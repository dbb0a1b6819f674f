"""Pool validation: structural errors are named (file, column, id) before any work."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pool_helpers import tiny_pool

from dal_dist.errors import DalDistError
from dal_dist.pool import pool_files, validate_pool


def test_missing_id_column_is_named(tmp_path: Path) -> None:
    pq.write_table(pa.table({"image": [b"x"], "label": [1]}), tmp_path / "p.parquet")
    with pytest.raises(DalDistError, match=r"p.parquet: missing column `id`"):
        validate_pool(tmp_path)


def test_duplicate_ids_across_files_name_the_id_and_files(tmp_path: Path) -> None:
    tiny_pool(tmp_path, [0, 1, 2])
    tiny_pool(tmp_path, [3, 2, 4])
    with pytest.raises(DalDistError, match=r"column `id`: 1 duplicate id\(s\), e\.g\. id 2 appears 2 times in "
                                           r".*part-00000\.parquet, .*part-00003\.parquet"):
        validate_pool(tmp_path)


def test_truncated_parquet_file_is_named(tmp_path: Path) -> None:
    tiny_pool(tmp_path, [0, 1])
    f = tmp_path / "part-00000.parquet"
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(DalDistError,
                       match=r"part-00000.parquet: not a readable Parquet file \(truncated or corrupt\?\)"):
        validate_pool(tmp_path)


def test_stray_files_are_warned_and_skipped(tmp_path: Path) -> None:
    tiny_pool(tmp_path, [0, 1])
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".hidden.parquet").write_text("not parquet")
    with pytest.warns(UserWarning, match=r"skipping 1 non-Parquet entry: notes.txt"):
        info = validate_pool(tmp_path)
    assert info.rows == 2 and len(info.files) == 1


def test_other_structural_errors(tmp_path: Path) -> None:
    with pytest.raises(DalDistError, match="no .parquet files"):
        pool_files(tmp_path)
    cases = {
        "nullid": (pa.table({"id": pa.array([1, None], pa.int64()), "image": [b"a", b"b"]}), r"`id` has 1 null values"),
        "strid": (pa.table({"id": ["a"], "image": [b"a"]}), r"`id` has type string, expected int64"),
        "strimg": (pa.table({"id": [1], "image": ["a"]}), r"`image` has type string, expected binary"),
        "floatlabel": (pa.table({"id": [1], "image": [b"a"], "label": [0.5]}),
                       r"`label` has type double, expected integers"),
    }
    for name, (table, msg) in cases.items():
        (tmp_path / name).mkdir()
        pq.write_table(table, tmp_path / name / "p.parquet")
        with pytest.raises(DalDistError, match=msg):
            validate_pool(tmp_path / name)
    mixed = tmp_path / "mixed"
    tiny_pool(mixed, [0])
    pq.write_table(pa.table({"id": [5], "image": [b"a"]}), mixed / "part-00009.parquet")
    with pytest.raises(DalDistError, match=r"part-00009.parquet: schema differs from .*part-00000.parquet: `channels`"):
        validate_pool(mixed)
