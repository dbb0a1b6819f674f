"""Cluster-Margin (Citovsky et al. 2021): top-M by margin, round-robin over clusters smallest first, clusters reused."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import hac_clusters, round_robin, select
from selection_helpers import write_scores


def test_round_robin_covers_clusters_smallest_first():
    ids = np.arange(100, 130)
    cl = np.array([0] * 12 + [1] * 3 + [2] * 8 + [3] * 7)
    picks = round_robin(ids, cl, 9, seed=4)
    of = dict(zip(ids.tolist(), cl.tolist()))
    got = [of[i] for i in picks.tolist()]
    assert got[:4] == [1, 3, 2, 0] and got[4:8] == [1, 3, 2, 0] and got[8] == 1  # sizes 3 < 7 < 8 < 12
    assert len(set(picks.tolist())) == 9
    np.testing.assert_array_equal(picks, round_robin(ids, cl, 9, seed=4))
    assert not np.array_equal(picks, round_robin(ids, cl, 9, seed=5))
    assert [of[i] for i in round_robin(ids, cl, 14, seed=0).tolist()][12:] == [3, 2]  # cluster 1 used up


def test_hac_recovers_separated_blobs():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 3)) * 50
    truth = np.repeat(np.arange(4), 40)
    x = (centers[truth] + rng.standard_normal((160, 3))).astype(np.float32)
    got = hac_clusters(x, 4, seed=1)
    assert len(np.unique(got)) == 4
    for c in range(4):  # each blob in exactly one cluster
        assert len(np.unique(got[truth == c])) == 1


@pytest.fixture
def margin_scores(tmp_path):
    rng = np.random.default_rng(3)
    n = 300
    ids = rng.permutation(10_000)[:n].astype(np.int64)
    emb = (rng.standard_normal((5, 4))[np.arange(n) % 5] * 30 + rng.standard_normal((n, 4))).astype(np.float32)
    labeled = np.zeros(n, bool)
    labeled[:15] = True
    margin = rng.random(n).astype(np.float32)
    return write_scores(tmp_path / "s", ids, emb, files=3, labeled=labeled, scores={"margin": margin}), \
        ids, labeled, margin


def test_select_picks_from_top_m_round_robin_and_reuses_clusters(margin_scores, tmp_path):
    path, ids, labeled, margin = margin_scores
    cf = tmp_path / "clusters.parquet"
    t = select("cluster_margin", 20, scores=path, candidates=60, clusters=5, cluster_file=cf, seed=2)
    got, cl = t.column("id").to_numpy(), t.column("cluster").to_numpy()
    uid, um = ids[~labeled], margin[~labeled].astype(np.float64)
    top = set(uid[np.lexsort((uid, -um))[:60]].tolist())
    assert set(got.tolist()) <= top and len(set(got.tolist())) == 20
    assert len(set(cl[:5].tolist())) == 5  # the first turn takes one from each of the 5 clusters
    saved = pq.read_table(cf)
    assert saved.num_rows == len(ids)  # every row of the pool has a cluster
    again = select("cluster_margin", 20, scores=path, candidates=60, clusters=5, cluster_file=cf, seed=2)
    assert again.equals(t)
    with pytest.raises(DalDistError, match="made with clusters = 5, not 6"):
        select("cluster_margin", 20, scores=path, candidates=60, clusters=6, cluster_file=cf)


def test_bad_input_refused(margin_scores, tmp_path):
    path = margin_scores[0]
    with pytest.raises(DalDistError, match="k = 30 is larger than --candidates = 20"):
        select("cluster_margin", 30, scores=path, candidates=20)
    with pytest.raises(DalDistError, match="k = 286 is larger"):
        select("cluster_margin", 286, scores=path)
    with pytest.raises(DalDistError, match="is, or is inside, the input"):
        select("cluster_margin", 3, scores=path, cluster_file=path / "c.parquet")
    with pytest.raises(DalDistError, match="only used by the strategy cluster_margin"):
        select("density", 3, scores=path, by="margin", cluster_file=tmp_path / "c.parquet")
    with pytest.raises(DalDistError, match="missing score column `margin`"):
        select("cluster_margin", 3, scores=write_scores(tmp_path / "nm", np.arange(20), np.ones((20, 2), np.float32)))
