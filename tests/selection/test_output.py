"""Publishing a selection never lands over the user's data: existing files, directories, inputs, pools."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import check_selection_out, select, write_selection


@pytest.fixture
def table():
    return pa.table({"id": pa.array([3, 1, 2], pa.int64())})


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_existing_file_needs_overwrite(tmp_path, table):
    out = tmp_path / "sel.parquet"
    out.write_bytes(b"the user's file")
    with pytest.raises(DalDistError) as e:
        write_selection(table, out)
    assert str(out) in _one_line(e) and "--overwrite" in str(e.value)
    assert out.read_bytes() == b"the user's file"
    write_selection(table, out, overwrite=True)
    assert pq.read_table(out).equals(table)


def test_directory_is_refused_even_with_overwrite(tmp_path, table):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(DalDistError, match="is a directory") as e:
            write_selection(table, tmp_path / "d", overwrite=overwrite)
        _one_line(e)
    assert (tmp_path / "d" / "keep.txt").read_text() == "x"


def test_out_inside_an_input_is_refused_even_with_overwrite(scores_dir, tmp_path, table):
    """A data file of the scores dataset, the scores dir itself, a new file in it, the labeled file."""
    scores = scores_dir[0]
    part = scores / "part-00000.parquet"
    before = part.read_bytes()
    labeled = tmp_path / "labeled.csv"
    labeled.write_text("id\n1\n")
    inputs = (scores, None, labeled)
    for out in (part, scores, scores / "new.parquet", labeled, part.as_uri(), str(scores) + "/./x.parquet"):
        with pytest.raises(DalDistError, match="is, or is inside, the input") as e:
            write_selection(table, out, overwrite=True, inputs=inputs)
        _one_line(e)
    assert part.read_bytes() == before and not (scores / "new.parquet").exists()
    assert labeled.read_text() == "id\n1\n"
    link = tmp_path / "link"
    link.symlink_to(scores)
    with pytest.raises(DalDistError, match="is, or is inside, the input"):
        check_selection_out(link / "x.parquet", inputs, True)
    check_selection_out(tmp_path / "scores2" / "x.parquet", inputs, False)  # a sibling name is not inside


def test_out_inside_a_pool_is_refused(tmp_path, table):
    from dal_dist.pool import write_pool

    pool = tmp_path / "pool"
    write_pool(pool, np.zeros((4, 2, 2, 1), np.uint8), np.arange(4))
    listing = sorted(p.name for p in pool.iterdir())
    with pytest.raises(DalDistError, match="is, or is inside, the input"):
        check_selection_out(pool / "sel.parquet", (pool,), True)
    with pytest.raises(DalDistError, match="inside the pool directory") as e:  # even when not named as an input
        check_selection_out(pool / "sel.parquet", (), True)
    _one_line(e)
    assert sorted(p.name for p in pool.iterdir()) == listing


def test_select_then_write_with_inputs(scores_dir, tmp_path):
    path = scores_dir[0]
    table = select("topk", 5, scores=path, by="bald")
    out = write_selection(table, tmp_path / "sel.parquet", inputs=(path,))
    assert pq.read_table(out).equals(table)
