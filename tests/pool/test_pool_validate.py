"""Pool validation: structural errors are named (file, column, id) before any work."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pool_helpers import tiny_pool

from dal_dist.errors import DalDistError
from dal_dist.pool import META_FILE, pool_files, pool_info, validate_pool


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


def _rows(ids: pa.Array, **extra: pa.Array) -> pa.Table:
    return pa.table({"id": ids, "image": pa.array([b"\0"] * len(ids)), **extra})


def test_uint64_ids_are_refused_naming_the_file(tmp_path: Path) -> None:
    pq.write_table(_rows(pa.array([2**63 + 5, 1], pa.uint64())), tmp_path / "p.parquet")
    with pytest.raises(DalDistError, match=r"p.parquet: column `id` has type uint64, expected int64 \(signed: "
                                           r"uint64 is refused, ids ≥ 2\^63 would come back negative\)"):
        validate_pool(tmp_path)
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    pq.write_table(_rows(pa.array([7, 9], pa.uint32())), narrow / "p.parquet")  # narrower ids fit in int64
    assert validate_pool(narrow).rows == 2


@pytest.mark.parametrize("label, shown", [(2**40, str(2**40)), (2**31, str(2**31)), (-1, "-1")])
def test_labels_outside_the_class_range_are_refused_without_a_huge_histogram(tmp_path: Path, label: int,
                                                                             shown: str) -> None:
    pq.write_table(_rows(pa.array([10, 11, 12]), label=pa.array([1, None, label], pa.int64())), tmp_path / "p.parquet")
    with pytest.raises(DalDistError, match=rf"p.parquet: column `label` has value {shown} at row 2 \(id 12\); "
                                           r"expected class indices 0..C-1 below 2\^31"):
        pool_info(tmp_path)


def test_sparse_large_labels_are_counted_without_allocating_up_to_them(tmp_path: Path) -> None:
    big = 2**31 - 1
    pq.write_table(_rows(pa.array([0, 1, 2]), label=pa.array([big, 3, big], pa.uint64())), tmp_path / "p.parquet")
    info = validate_pool(tmp_path)
    assert info.label_counts == {3: 1, big: 2} and info.num_classes == big + 1


@pytest.mark.parametrize("field, value", [("num_classes", "ten"), ("num_classes", [10]), ("num_classes", 2.5),
                                          ("num_classes", True), ("num_classes", 0), ("height", "28"),
                                          ("channels", {"c": 1}), ("rows", -1), ("classes", "cat,dog")])
def test_pool_meta_with_wrong_field_types_is_named(tmp_path: Path, field: str, value: object) -> None:
    tiny_pool(tmp_path, [0, 1])
    (tmp_path / META_FILE).write_text(json.dumps({"num_classes": 2, field: value}))
    with pytest.raises(DalDistError) as e:
        pool_info(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / META_FILE}: field `{field}` is {json.dumps(value)}, expected ")
    assert "\n" not in str(e.value)


def test_pool_info_on_what_is_not_a_pool_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other" / "sub").mkdir(parents=True)
    (tmp_path / "other" / "notes.txt").write_text("hi")
    (tmp_path / "data.npy").write_bytes(b"\x93NUMPY not a pool")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    cases = {
        "empty": "empty: not a pool: no .parquet files in the directory (it is empty)",
        "other": "other: not a pool: no .parquet files in the directory (it holds notes.txt, sub)",
        "data.npy": "data.npy: not a pool: a file that is not Parquet (expected a pool directory of .parquet "
                    "files, or one Parquet file)",
        "bad.parquet": "bad.parquet: not a readable Parquet file (truncated or corrupt?): ",
        "missing": "missing: pool not found (expected a directory of .parquet files)",
    }
    for name, msg in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "skipping ..." warning before the error
            with pytest.raises(DalDistError) as e:
                pool_info(tmp_path / name)
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)
