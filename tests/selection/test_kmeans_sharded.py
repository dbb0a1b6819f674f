"""TypiClust and Cluster-Margin's clustering on Ray shard actors pick what one process picks."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import select
from dal_dist.selection.cluster_margin import hac_clusters
from dal_dist.selection.io import scan_scores
from dal_dist.selection.kmeans import kmeans, kmeans_sample
from dal_dist.selection.kmeans_sharded import hac_clusters_sharded, typiclust_sharded
from selection_helpers import kill_actor, write_scores


def _blobs(rng, n, centers, d, spread=8.0):
    c = rng.standard_normal((centers, d)) * spread
    return (c[rng.integers(0, centers, n)] + rng.standard_normal((n, d))).astype(np.float32)


def test_kmeans_sample_is_seeded_sorted_and_trains_on_those_rows():
    s = kmeans_sample(10_000, 4, seed=3, max_points_per_centroid=50)
    assert len(s) == 200 and np.all(np.diff(s) > 0)
    np.testing.assert_array_equal(s, kmeans_sample(10_000, 4, seed=3, max_points_per_centroid=50))
    assert not np.array_equal(s, kmeans_sample(10_000, 4, seed=4, max_points_per_centroid=50))
    np.testing.assert_array_equal(kmeans_sample(150, 4, max_points_per_centroid=50), np.arange(150))
    x = _blobs(np.random.default_rng(0), 3000, 4, 3)
    a, cent = kmeans(x, 4, seed=1, max_points_per_centroid=20)
    d2 = ((x[:, None, :] - cent[None]) ** 2).sum(-1)
    assert (d2[np.arange(len(x)), a] <= d2.min(1) + 1e-3).all()  # every row at its nearest centroid


def test_typiclust_sharded_equals_single_node(ray_local, tmp_path):
    rng = np.random.default_rng(5)
    n = 700
    x = _blobs(rng, n, 9, 5)
    labeled = np.zeros(n, bool)
    labeled[rng.choice(n, 12, replace=False)] = True
    ids = rng.permutation(100_000)[:n].astype(np.int64)
    path = write_scores(tmp_path / "s", ids, x, files=5, labeled=labeled)
    for k, clusters in ((40, 500), (30, 8)):  # 52 clusters one pick each; 8 clusters visited cyclically
        want = select("typiclust", k, scores=path, seed=4, clusters=clusters)
        got_ids, typ = typiclust_sharded(scan_scores(path), k, workers=3, seed=4, max_clusters=clusters,
                                         actor_cpus=0)
        np.testing.assert_array_equal(got_ids, want.column("id").to_numpy())
        np.testing.assert_array_equal(typ, want.column("typicality").to_numpy())
        assert not set(got_ids.tolist()) & set(ids[labeled].tolist())


def test_typiclust_picks_survive_a_shard_lost_after_staging_its_rows(ray_local, tmp_path, monkeypatch):
    """The shard that staged the clusters' rows (and owns their object-store copies) dies before their picks are
    made: those picks fetch the rows again through the rebuilt shard, and the selection does not change."""
    from dal_dist.selection.shards import ShardGroup

    rng = np.random.default_rng(8)
    n = 700
    x = _blobs(rng, n, 9, 5)
    ids = rng.permutation(100_000)[:n].astype(np.int64)
    path = write_scores(tmp_path / "s", ids, x, files=5)
    want = select("typiclust", 40, scores=path, seed=2)
    submit, call = ShardGroup.submit, ShardGroup.call
    seen = {"typical": 0, "refetched": 0}

    def submit_then_kill(self, j, method, *args):
        seen[method] = seen.get(method, 0) + 1
        if method == "typical" and seen["typical"] == 5:
            kill_actor(self.actors[0])  # its staged rows go with it
        return submit(self, j, method, *args)

    def counting_call(self, method, *args, **kw):
        seen["refetched"] += method == "unlabeled_x"
        return call(self, method, *args, **kw)

    monkeypatch.setattr(ShardGroup, "submit", submit_then_kill)
    monkeypatch.setattr(ShardGroup, "call", counting_call)
    got_ids, typ = typiclust_sharded(scan_scores(path), 40, workers=3, seed=2, actor_cpus=0)
    assert seen["refetched"] >= 1  # the fallback ran
    np.testing.assert_array_equal(got_ids, want.column("id").to_numpy())
    np.testing.assert_array_equal(typ, want.column("typicality").to_numpy())


def test_cluster_margin_clustering_sharded_equals_single_node(ray_local, tmp_path):
    rng = np.random.default_rng(6)
    n = 1500  # clusters 2 -> 20 fine centroids trained on a 1,280-row sample: the sample is gathered from shards
    x = _blobs(rng, n, 6, 4)
    path = write_scores(tmp_path / "s", np.arange(n, dtype=np.int64), x, files=4,
                        scores={"margin": rng.random(n).astype(np.float32)})
    for clusters in (2, 7):
        want = hac_clusters(x, clusters, seed=3)
        np.testing.assert_array_equal(hac_clusters_sharded(scan_scores(path), clusters, workers=2, seed=3,
                                                           actor_cpus=0), want)
    a = select("cluster_margin", 25, scores=path, clusters=7, seed=1, cluster_file=tmp_path / "one.parquet")
    b = select("cluster_margin", 25, scores=path, clusters=7, seed=1, cluster_file=tmp_path / "two.parquet",
               distributed=True, workers=2)
    assert a.equals(b)
    assert pq.read_table(tmp_path / "one.parquet").equals(pq.read_table(tmp_path / "two.parquet"))


def test_distributed_refused_where_nothing_is_sharded(tmp_path):
    path = write_scores(tmp_path / "s", np.arange(20), np.ones((20, 2), np.float32),
                        scores={"bald": np.ones(20, np.float32)})
    for strategy in ("topk", "powerbald", "density", "random"):
        with pytest.raises(DalDistError, match=f"--distributed .* not {strategy}"):
            select(strategy, 3, scores=path, by="bald", distributed=True)
