"""BADGE on Ray shard actors draws what the single-node k-means++ seeding draws; a killed shard is replayed."""

from __future__ import annotations

import numpy as np
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import select
from dal_dist.selection.badge_sharded import badge_kmeanspp_sharded, shard_of
from dal_dist.selection.io import scan_scores
from dal_dist.selection.shards import ShardGroup
from selection_helpers import kill_actor, softmax_rows, write_scores


@pytest.fixture
def badge_scores(tmp_path):
    """300 rows in 5 files, 20 labeled, with a block of 40 exact duplicates (D² reaches 0 for many rows)."""
    rng = np.random.default_rng(3)
    n = 300
    h = rng.standard_normal((n, 6)).astype(np.float32)
    p = softmax_rows(rng, n, 4)
    h[100:140], p[100:140] = h[100], p[100]
    labeled = np.zeros(n, bool)
    labeled[rng.choice(n, 20, replace=False)] = True
    ids = rng.permutation(5000)[:n].astype(np.int64)
    return write_scores(tmp_path / "s", ids, h, files=5, labeled=labeled, vectors={"probs": p})


def test_sharded_picks_equal_single_node(ray_local, badge_scores):
    for seed in (0, 7):
        want = select("badge", 60, scores=badge_scores, seed=seed)
        stats: dict = {}
        ids, d2 = badge_kmeanspp_sharded(scan_scores(badge_scores), 60, width=4, workers=3, seed=seed,
                                         actor_cpus=0, stats=stats)
        np.testing.assert_array_equal(ids, want.column("id").to_numpy())
        np.testing.assert_allclose(d2, want.column("d2").to_numpy(), rtol=1e-12)
        assert stats["workers"] == 3 and stats["restarts"] == 0


def test_sharded_uniform_draw_when_every_row_is_a_center(ray_local, tmp_path):
    """Every row a duplicate: after the first pick all D² are 0 and the draws are uniform, as on one node."""
    n = 24
    h = np.ones((n, 3), np.float32)
    p = np.tile(np.array([[0.6, 0.4]], np.float32), (n, 1))
    path = write_scores(tmp_path / "s", np.arange(n, dtype=np.int64), h, files=4, vectors={"probs": p})
    want = select("badge", 10, scores=path, seed=5).column("id").to_numpy()
    got = select("badge", 10, scores=path, seed=5, distributed=True, workers=2).column("id").to_numpy()
    np.testing.assert_array_equal(got, want)
    assert len(set(got.tolist())) == 10


def test_sharded_names_the_nan_probability(ray_local, tmp_path):
    p = np.full((20, 3), 1 / 3, np.float32)
    p[13, 1] = np.nan
    path = write_scores(tmp_path / "s", np.arange(20, dtype=np.int64), np.ones((20, 2), np.float32), files=2,
                        vectors={"probs": p})
    with pytest.raises(DalDistError, match=r"`probs` has NaN or inf values \(id 13\)"):
        select("badge", 3, scores=path, distributed=True, workers=2)


def test_shard_of_clamps_past_the_end_to_the_last_weighted_shard():
    w = np.array([2.0, 0.0, 3.0, 0.0])
    assert shard_of(w, 0.5) == (0, 0.5)
    assert shard_of(w, 2.0) == (2, 0.0)  # a boundary belongs to the next shard with weight
    assert shard_of(w, 4.5) == (2, 2.5)
    assert shard_of(w, 5.0) == (2, 3.0)  # u·total rounded up to the total


def test_shard_group_rebuilds_a_killed_actor_from_its_recorded_calls(ray_local):
    class _Counter:  # defined here: pickled by value for the workers
        def __init__(self, start: int) -> None:
            self.value = start

        def add(self, x: int) -> int:
            self.value += x
            return self.value

        def get(self) -> int:
            return self.value

    group = ShardGroup(_Counter, lambda j: {"start": 10 * j}, 2, actor_cpus=0)
    try:
        for x in (1, 2, 3):
            group.call("add", x, mutates=True)
        kill_actor(group.actors[1])
        assert group.call("get") == [6, 16]  # shard 1 respawned and its three adds replayed
        kill_actor(group.actors[0])
        assert group.call("add", 4, mutates=True) == [10, 20]  # a state change lost with the actor is redone once
        assert group.restarts == [1, 1]
    finally:
        group.kill()
