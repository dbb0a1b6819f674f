"""Distributed k-center on a 2-actor local Ray picks exactly what the single-node path picks."""

from __future__ import annotations

import numpy as np
import pytest

from dal_dist.selection import select_kcenter
from dal_dist.selection.io import scan_scores
from dal_dist.selection.kcenter_sharded import kcenter_greedy_sharded
from dal_dist.selection.shards import plan_shards
from selection_helpers import write_scores


@pytest.mark.parametrize("with_labeled", [False, True])
def test_distributed_equals_single_node(ray_local, tmp_path, with_labeled):
    rng = np.random.default_rng(11)
    n = 900
    # Integer-valued embeddings: many exact ties across shards, so the global tie-break is exercised.
    emb = rng.integers(0, 4, (n, 5)).astype(np.float32)
    labeled = rng.random(n) < 0.05 if with_labeled else None
    path = write_scores(tmp_path / "s", rng.permutation(n).astype(np.int64), emb, files=5, labeled=labeled)
    single_ids, single_r = select_kcenter(path, 40, seed=9)
    stats = {}
    scan = scan_scores(path)
    dist_ids, dist_r = kcenter_greedy_sharded(scan, 40, workers=2, seed=9, actor_cpus=0, stats=stats)
    np.testing.assert_array_equal(dist_ids, single_ids)
    np.testing.assert_array_equal(dist_r, single_r)
    assert stats["workers"] == 2 and stats["overhead_s_per_pick"] >= 0


def test_plan_shards_is_contiguous_and_covers_all_files(tmp_path):
    path = write_scores(tmp_path / "s", np.arange(100), np.zeros((100, 2), np.float32), files=7)
    scan = scan_scores(path)
    for w in (1, 2, 3, 7, 20):
        shards = plan_shards(scan, w)
        assert sum(shards, []) == list(range(7)) and len(shards) == min(w, 7)
