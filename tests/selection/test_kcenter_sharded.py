"""Distributed k-center on a 2-actor local Ray picks exactly what the single-node path picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dal_dist.selection import select_kcenter
from dal_dist.selection.io import scan_scores
from dal_dist.selection.kcenter_sharded import kcenter_greedy_sharded
from dal_dist.errors import DalDistError
from dal_dist.selection import check_select_arguments
from dal_dist.selection.shards import plan_shards, shard_gpus
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
    assert stats["gpus_per_worker"] == 0  # no GPU in this cluster: the shards ask for none and run on CPU


def test_plan_shards_is_contiguous_and_covers_all_files(tmp_path):
    path = write_scores(tmp_path / "s", np.arange(100), np.zeros((100, 2), np.float32), files=7)
    scan = scan_scores(path)
    for w in (1, 2, 3, 7, 20):
        shards = plan_shards(scan, w)
        assert sum(shards, []) == list(range(7)) and len(shards) == min(w, 7)


def test_shards_request_gpus_where_the_pick_loop_can_use_them():
    assert shard_gpus("auto", None, 4, cluster_gpus=8) == 1.0  # at most one card a shard
    assert shard_gpus("auto", None, 4, cluster_gpus=2) == 0.5  # two shards share a card
    assert shard_gpus(None, None, 2, cluster_gpus=0) == 0.0  # a CPU cluster: CPU shards
    assert shard_gpus("cpu", None, 2, cluster_gpus=8) == 0.0  # asked for CPU: no card held idle
    assert shard_gpus("auto", 1, 4, cluster_gpus=0) == 1.0  # requested, not counted (an autoscaler adds nodes)
    assert shard_gpus("cuda", 2, 2, cluster_gpus=0) == 2.0
    with pytest.raises(DalDistError, match="--device cuda with --distributed: the shard actors need GPUs"):
        shard_gpus("cuda", None, 2, cluster_gpus=0)
    with pytest.raises(DalDistError, match="the shard actors need GPUs"):
        shard_gpus("cuda", 0, 2, cluster_gpus=8)  # GPUs up, but none asked for: every shard would fail


@pytest.mark.parametrize("kwargs, message", [
    ({"strategy": "badge", "distributed": True, "gpus_per_worker": 1}, "sizes the shard actors of --distributed "
                                                                       "kcenter, not badge"),
    ({"strategy": "kcenter", "gpus_per_worker": 1}, "not a single-node kcenter"),
    ({"strategy": "kcenter", "distributed": True, "gpus_per_worker": 1.5}, "whole number"),
    ({"strategy": "kcenter", "distributed": True, "gpus_per_worker": -1}, ">= 0"),
    ({"strategy": "kcenter", "distributed": True, "gpus_per_worker": 1, "device": "cpu"}, "leave them idle"),
    ({"strategy": "kcenter", "distributed": True, "device": "tpu"}, "not a device name"),
])
def test_shard_gpu_requests_that_cannot_work_are_refused_before_ray(kwargs, message):
    strategy = kwargs.pop("strategy")
    with pytest.raises(DalDistError, match=message):
        check_select_arguments(strategy, 5, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_distributed_cuda_device_is_the_shards_business_not_the_drivers():
    check_select_arguments("kcenter", 5, distributed=True, device="cuda", gpus_per_worker=1)  # no GPU here: fine
    with pytest.raises(DalDistError, match="no CUDA GPU is visible here"):
        check_select_arguments("kcenter", 5, device="cuda")  # single node: this process would run it
