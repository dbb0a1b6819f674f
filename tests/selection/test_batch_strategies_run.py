"""The batch-aware strategies as run-config strategies: one table row each, hashes of older configs unchanged,
and a real (in-process executor) run picks with the library's selection over the round's scores."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from dal_dist.driver import run
from dal_dist.driver.config import parse_config
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.steps import round_seed
from dal_dist.errors import DalDistError
from dal_dist.selection import select

BASE = {"pool": "builtin:mnist5k", "budget": 10, "rounds": 2}
INITIAL, BUDGET = 20, 10


def test_unused_options_leave_the_config_hash_alone():
    for name in ("bald", "kcenter", "hybrid"):
        body = json.loads(parse_config({**BASE, "strategy": {"name": name}}).canonical_json())
        assert "beta" not in body["strategy"] and "clusters" not in body["strategy"]
    a = parse_config({**BASE, "strategy": {"name": "powerbald"}}).config_hash()
    b = parse_config({**BASE, "strategy": {"name": "powerbald", "beta": 2.0}}).config_hash()
    assert a != b


@pytest.mark.parametrize("strategy,match", [
    ({"name": "bald", "beta": 1.0}, "`beta` is only used by the strategies"),
    ({"name": "badge", "by": "bald"}, "`by` is only used by the strategies"),
    ({"name": "powerbald", "beta": float("inf")}, "finite number"),
    ({"name": "softmax", "beta": -0.5}, "greater than or equal to 0"),
    ({"name": "density", "clusters": 3}, "`clusters` is only used by the strategies"),
    ({"name": "typiclust", "clusters": 0}, "greater than or equal to 1"),
    ({"name": "badge", "candidates": 10}, "`candidates` is only used by the strategies"),
])
def test_bad_strategy_options_refused(strategy, match):
    with pytest.raises(DalDistError, match=match):
        parse_config({**BASE, "strategy": strategy})


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """300 seeded random 28×28 images (ids 0..299) as the pool, 60 more as the test pool."""
    from dal_dist.pool import write_pool

    out = tmp_path_factory.mktemp("pools")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (360, 28, 28, 1), dtype=np.uint8)
    y = np.arange(360) % 10
    write_pool(out / "pool", x[:300], y[:300], meta={"num_classes": 10})
    write_pool(out / "test", x[300:], y[300:], ids=np.arange(300, 360), meta={"num_classes": 10})
    return out / "pool", out / "test"


def small_config(pool, test, **over) -> dict:
    cfg = {"pool": str(pool), "test_pool": str(test), "initial": {"kind": "balanced", "size": INITIAL},
           "budget": BUDGET, "rounds": 1, "final_train": False, "workers": 1, "seed": 3, "executor": "local"}
    return {**cfg, **over}


@pytest.mark.parametrize("strategy", [{"name": "softrank", "by": "entropy", "beta": 2.0, "mc_samples": 2},
                                      {"name": "badge", "mc_samples": 2},
                                      {"name": "typiclust", "clusters": 8, "mc_samples": 2},
                                      {"name": "density", "beta": 0.5, "mc_samples": 2},
                                      {"name": "cluster_margin", "clusters": 4, "candidates": 40, "mc_samples": 2},
                                      {"name": "batchbald", "candidates": 30, "mc_samples": 3}])
def test_run_round_uses_the_library_selection(pools, tmp_path, strategy):
    cfg = parse_config(small_config(*pools, executor="local", rounds=1, strategy=strategy, final_train=False,
                                    train={"epochs": 1, "batch_size": 32, "workers": 1}))
    assert run(cfg, tmp_path / "run").status == "done"
    assert LabelLedger(tmp_path / "run").count() == INITIAL + BUDGET
    rd = tmp_path / "run" / "rounds" / "001"
    picked = pq.read_table(rd / "selection.parquet").column("id").to_numpy()
    seed = round_seed(cfg.seed, 1, "select")
    opts = {key: strategy[key] for key in ("by", "beta", "clusters", "candidates") if key in strategy}
    if strategy["name"] == "cluster_margin":  # clustered in round 1, kept in the run directory for later rounds
        opts["cluster_file"] = tmp_path / "run" / "clusters.parquet"
        assert opts["cluster_file"].is_file()
    if strategy["name"] == "batchbald":  # re-runs round 1's model on its candidates with shared masks
        opts.update(pool=pools[0], checkpoint=rd / "model.pt", mc_samples=3)
    want = select(strategy["name"], BUDGET, scores=rd / "scores", seed=seed, **opts).column("id").to_numpy()
    np.testing.assert_array_equal(picked, want)
