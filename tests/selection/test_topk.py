"""Top-k merged from per-file top-k equals a full sort; random is seeded; hybrid stays inside top-M."""

from __future__ import annotations

import numpy as np
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import select
from dal_dist.selection.topk import merge_topk
from selection_helpers import brute_kcenter, write_scores


def _full_sort(ids, scores, k):
    o = np.lexsort((ids, -scores))[:k]
    return ids[o], scores[o]


@pytest.mark.parametrize("k", [1, 7, 50, 999])
def test_merge_topk_equals_full_sort_with_ties(k):
    rng = np.random.default_rng(k)
    ids = rng.permutation(5000)[:1000].astype(np.int64)
    scores = rng.integers(0, 20, 1000).astype(np.float64)  # heavy ties
    chunks = [(ids[a:b], scores[a:b]) for a, b in zip([0, 10, 300, 301, 800], [10, 300, 301, 800, 1000])]
    got_ids, got_scores = merge_topk(chunks, k)
    ref_ids, ref_scores = _full_sort(ids, scores, k)
    np.testing.assert_array_equal(got_ids, ref_ids)
    np.testing.assert_array_equal(got_scores, ref_scores)


def test_topk_over_scores_dataset_excludes_labeled(scores_dir):
    path, ids, _, labeled, bald = scores_dir
    table = select("topk", 25, scores=path, by="bald")
    ref_ids, ref_scores = _full_sort(ids[~labeled], bald[~labeled].astype(np.float64), 25)
    assert table.column("id").to_pylist() == ref_ids.tolist()
    np.testing.assert_array_equal(table.column("score").to_numpy(), ref_scores)


def test_random_is_seeded_and_distinct(scores_dir):
    path, ids, _, labeled, _ = scores_dir
    a = select("random", 30, scores=path, seed=3).column("id").to_pylist()
    b = select("random", 30, scores=path, seed=3).column("id").to_pylist()
    c = select("random", 30, scores=path, seed=4).column("id").to_pylist()
    assert a == b and a != c and len(set(a)) == 30
    assert set(a) <= set(ids[~labeled].tolist())


def test_hybrid_is_subset_of_top_m_and_is_kcenter_on_it(scores_dir):
    path, ids, emb, labeled, bald = scores_dir
    m, k = 60, 12
    table = select("hybrid", k, scores=path, by="bald", candidates=m)
    top_ids, _ = _full_sort(ids[~labeled], bald[~labeled].astype(np.float64), m)
    got = table.column("id").to_numpy()
    assert set(got.tolist()) <= set(top_ids.tolist())
    # Same picks as the brute force run on the top-M rows (in dataset order) with the labeled rows as centers.
    cand = np.flatnonzero(~labeled & np.isin(ids, top_ids))
    ref, _ = brute_kcenter(emb[cand], emb[labeled], k)
    np.testing.assert_array_equal(got, ids[cand][ref])
    with pytest.raises(DalDistError, match="larger than --candidates"):
        select("hybrid", m + 1, scores=path, by="bald", candidates=m)


@pytest.mark.parametrize("strategy", ["topk", "hybrid"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_score_names_the_file_and_id(tmp_path, strategy, bad):
    ids = np.arange(100, 160)
    bald = np.linspace(0, 1, 60).astype(np.float32)
    bald[41] = bad
    path = write_scores(tmp_path / "s", ids, np.zeros((60, 4), np.float32), files=2, scores={"bald": bald})
    with pytest.raises(DalDistError, match=r"part-00001\.parquet: score `bald` is missing/NaN/inf for id 141"):
        select(strategy, 3, scores=path, by="bald", candidates=10)
