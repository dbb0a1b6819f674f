"""Reading scores datasets for selection: k-center over files, and every bad input named before work."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import select, write_selection
from selection_helpers import brute_kcenter, write_scores


def test_kcenter_over_files_matches_brute_force_with_labeled_file(scores_dir, tmp_path):
    path, ids, emb, labeled, _ = scores_dir
    extra = ids[~labeled][:5]  # a --labeled file adds centers on top of the `labeled` column
    pq.write_table(pa.table({"id": extra}), tmp_path / "labeled.parquet")
    table = select("kcenter", 15, scores=path, labeled=tmp_path / "labeled.parquet")
    is_center = labeled | np.isin(ids, extra)
    ref, ref_r = brute_kcenter(emb[~is_center], emb[is_center], 15)
    assert table.column("id").to_pylist() == ids[~is_center][ref].tolist()
    np.testing.assert_allclose(table.column("radius").to_numpy(), ref_r, rtol=1e-12)
    out = write_selection(table, tmp_path / "sel.parquet")
    assert pq.read_table(out).equals(table)


def test_float16_embeddings_are_read_as_float16(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((100, 6)).astype(np.float16)
    path = write_scores(tmp_path / "s", np.arange(100), emb, files=2)
    table = select("kcenter", 10, scores=path, seed=2)
    assert table.column("id").to_pylist() == brute_kcenter(emb, None, 10, 2)[0].tolist()


def _ds(tmp_path, **kw):
    rng = np.random.default_rng(0)
    emb = kw.pop("emb", rng.standard_normal((50, 4)).astype(np.float32))
    return write_scores(tmp_path / "s", np.arange(len(emb)), emb, **kw)


def test_bad_inputs(tmp_path):
    path = _ds(tmp_path)
    cases = [
        (dict(strategy="kcenter", k=0), "positive"),
        (dict(strategy="kcenter", k=51), "larger than the number of candidates"),
        (dict(strategy="topk", k=3), "needs --by"),
        (dict(strategy="topk", k=3, by="entropy"), "missing score column `entropy`"),
        (dict(strategy="nope", k=3), "expected one of"),
    ]
    for kw, match in cases:
        with pytest.raises(DalDistError, match=match):
            select(scores=path, **kw)
    ids_file = tmp_path / "lab.csv"
    ids_file.write_text("id\n1\n999\n")
    with pytest.raises(DalDistError, match=r"labeled ids not in .* e\.g\. \[999\]"):
        select("kcenter", 3, scores=path, labeled=ids_file)


def test_nan_embedding_names_file_and_id(tmp_path):
    emb = np.zeros((50, 4), np.float32)
    emb[33, 2] = np.inf
    path = _ds(tmp_path, emb=emb)
    with pytest.raises(DalDistError, match=r"part-00001\.parquet.*NaN or inf.*id 33"):
        select("kcenter", 3, scores=path)


def test_dimension_mismatch_between_files(tmp_path):
    path = _ds(tmp_path)
    write_scores(tmp_path / "other", np.arange(100, 110), np.zeros((10, 5), np.float32), files=1)
    (tmp_path / "other" / "part-00000.parquet").rename(path / "part-00009.parquet")
    with pytest.raises(DalDistError, match="embedding dimension 5 differs from 4"):
        select("kcenter", 3, scores=path)


def test_empty_pool(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DalDistError, match="no \\*.parquet files"):
        select("kcenter", 3, scores=tmp_path / "empty")
    path = write_scores(tmp_path / "zero", np.arange(0), np.zeros((0, 4), np.float32), files=1)
    with pytest.raises(DalDistError, match="no rows"):
        select("kcenter", 3, scores=path)
    all_labeled = _ds(tmp_path / "lab", labeled=np.ones(50, bool))
    with pytest.raises(DalDistError, match="no unlabeled candidates"):
        select("kcenter", 3, scores=all_labeled)


@pytest.mark.parametrize("strategy", ["topk", "hybrid"])
@pytest.mark.parametrize("by", ["embedding", "labeled", "id"])
def test_by_a_non_score_column_names_the_score_columns(scores_dir, strategy, by):
    path = scores_dir[0]
    with pytest.raises(DalDistError, match=rf"`{by}` is not a score column \(by / --by takes one of: bald\)") as e:
        select(strategy, 3, scores=path, by=by, candidates=10)
    assert "\n" not in str(e.value)
