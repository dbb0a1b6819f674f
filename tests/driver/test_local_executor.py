"""The in-process executor (`executor: local`): same trainer loop and scorer as the Ray path, no Ray workers.

Also the two per-round cost knobs it is used with: `strategy.subset` (score a random unlabeled subset,
as Gal et al. 2017's code does) and `stop_at_accuracy` (end the run at the first round that reaches it).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dal_dist.driver.config import parse_config
from dal_dist.errors import DalDistError
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver import run, run_status
from dal_dist.models import build_model, default_config, load_checkpoint, save_checkpoint
from dal_dist.scoring import read_scores_table, score_pool
from dal_dist.training import TrainConfig, evaluate, train
from test_rounds import BUDGET, INITIAL, _read_idx, small_config, write_small_pools


@pytest.fixture(scope="module")
def mnist(mnist_test_dir):
    x = _read_idx(mnist_test_dir / "t10k-images-idx3-ubyte.gz", 3)[..., None]
    y = _read_idx(mnist_test_dir / "t10k-labels-idx1-ubyte.gz", 1).astype(np.int64)
    return x[:1500], y[:1500]


@pytest.fixture(scope="module")
def pools(mnist_test_dir, tmp_path_factory):
    return write_small_pools(mnist_test_dir, tmp_path_factory.mktemp("pools"))


def test_local_training_learns_and_replays_bit_for_bit(mnist, tmp_path):
    x, y = mnist
    mc = default_config("mnist-cnn", 10, seed=5)
    cfg = TrainConfig(epochs=3, batch_size=32, seed=2)
    a = train(mc, x[:300], y[:300], cfg, tmp_path / "a.pt", eval_images=x[500:], eval_labels=y[500:],
              executor="local")
    b = train(mc, x[:300], y[:300], cfg, tmp_path / "b.pt", executor="local")
    assert a.metrics["test_acc"] > 0.5  # 300 labels, 3 epochs: far above chance (0.1)
    assert abs(evaluate(tmp_path / "a.pt", x[500:], y[500:]) - a.metrics["test_acc"]) < 1e-9
    sa, sb = load_checkpoint(tmp_path / "a.pt").state_dict(), load_checkpoint(tmp_path / "b.pt").state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(DalDistError, match="local executor trains in one process"):
        train(mc, x[:40], y[:40], TrainConfig(epochs=1, workers=2), tmp_path / "c.pt", executor="local")
    with pytest.raises(DalDistError, match="executor must be"):
        train(mc, x[:40], y[:40], cfg, tmp_path / "c.pt", executor="dask")


def test_local_scoring_one_row_per_unlabeled_id_and_same_embeddings_as_direct(pools, tmp_path):
    pool, _ = pools
    ckpt = tmp_path / "m.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 10, seed=0)), ckpt)
    labeled = np.concatenate([np.arange(0, 200), np.arange(200, 600, 7)])  # batch 1 all labeled: skipped
    s = score_pool(pool, ckpt, tmp_path / "scores", acquisitions="bald,entropy", mc_samples=4, labeled=labeled,
                   executor="local", progress=False, batch_size=128)
    t = read_scores_table(tmp_path / "scores").sort_by("id")
    ids = t.column("id").to_numpy()
    assert s.rows == len(ids) == 600 - len(labeled)
    assert np.array_equal(ids, np.setdiff1d(np.arange(600), labeled))
    assert np.isfinite(t.column("bald").to_numpy()).all() and (t.column("bald").to_numpy() >= -1e-6).all()
    # Embeddings are deterministic (dropout off): equal to the model's own embed() of the same images.
    from dal_dist.pool import read_images
    from dal_dist.models import preprocess

    model = load_checkpoint(ckpt).eval()
    imgs = read_images(pool, ids[:50], None)
    with torch.no_grad():
        want = model.embed(model.features(preprocess(torch.from_numpy(imgs), model.config))).numpy()
    got = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)[:50]).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)  # stored as float16
    # Same output directory rules as the Ray path: no silent overwrite.
    with pytest.raises(DalDistError, match="not empty"):
        score_pool(pool, ckpt, tmp_path / "scores", executor="local", progress=False)


def test_local_run_with_subset_and_stop_at_accuracy(pools, tmp_path):
    pool, test = pools
    over = {"executor": "local", "strategy": {"name": "bald", "mc_samples": 4, "subset": 100},
            "train": {"epochs": 3, "batch_size": 16, "workers": 1}, "rounds": 6, "stop_at_accuracy": 0.3}
    rd = tmp_path / "run"
    out = run(parse_config(small_config(pool, test, **over)), rd)
    st = run_status(rd)
    r = st["target_reached_round"]
    assert out.status == "done" and "reached test accuracy" in out.message and r is not None and r < 6
    # The stopping round trained and evaluated, selected nothing; earlier rounds scored exactly `subset` rows.
    m = json.loads((rd / "rounds" / f"{r:03d}" / "manifest.json").read_text())
    assert m["kind"] == "target_reached" and m["metrics"]["test_accuracy"] >= 0.3 and m["selected_ids"] == []
    assert not (rd / "rounds" / f"{r + 1:03d}").exists()
    for k in range(1, r):
        assert read_scores_table(rd / "rounds" / f"{k:03d}" / "scores").num_rows == 100
    assert LabelLedger(rd).count() == INITIAL + (r - 1) * BUDGET == st["labels"] and st["complete"]
    # Resuming a finished run does nothing.
    again = run(None, rd, resume=True)
    assert again.status == "done" and LabelLedger(rd).count() == st["labels"]


def test_the_scoring_section_shapes_each_rounds_scoring_job(pools, tmp_path):
    """scoring.batch_size reaches the job: the round's scores are score_pool's at that batch size (the dropout
    masks are seeded per batch, so another size gives other scores), with overlap on."""
    from dal_dist.driver.steps import round_seed
    from dal_dist.models.checkpoint import CHECKPOINT_FILE

    pool, test = pools
    over = {"rounds": 1, "scoring": {"batch_size": 50, "threads_per_worker": 1, "overlap": True}}
    rd = tmp_path / "run"
    threads = torch.get_num_threads()
    assert run(parse_config(small_config(pool, test, **over)), rd).status == "done"
    assert torch.get_num_threads() == threads  # scoring's threads_per_worker did not stay for what follows
    r1 = rd / "rounds" / "001"
    labeled = LabelLedger(rd).ids(before_round=1)
    seed = round_seed(3, 1, "score")
    got = read_scores_table(r1 / "scores").sort_by("id")
    for batch_size, same in ((50, True), (256, False)):
        score_pool(pool, r1 / CHECKPOINT_FILE, tmp_path / f"s{batch_size}", acquisitions="bald", mc_samples=4,
                   labeled=labeled, seed=seed, batch_size=batch_size, executor="local")
        want = read_scores_table(tmp_path / f"s{batch_size}").sort_by("id")
        assert got.column("id").equals(want.column("id"))
        assert got.column("bald").equals(want.column("bald")) == same


def test_kcenter_on_a_random_subset_keeps_every_labeled_row_as_a_center(pools, tmp_path):
    pool, test = pools
    over = {"executor": "local", "strategy": {"name": "kcenter", "mc_samples": 2, "subset": 60},
            "train": {"epochs": 1, "batch_size": 16, "workers": 1}, "rounds": 1, "final_train": False}
    rd = tmp_path / "run"
    assert run(parse_config(small_config(pool, test, **over)), rd).status == "done"
    t = read_scores_table(rd / "rounds" / "001" / "scores", columns=["id", "labeled"])
    labeled = LabelLedger(rd).ids(before_round=1)
    is_lab = t.column("labeled").to_numpy(zero_copy_only=False)
    ids = t.column("id").to_numpy()
    # Every labeled row embedded (an initial center), exactly `subset` unlabeled rows, nothing else.
    assert sorted(ids[is_lab].tolist()) == sorted(labeled.tolist()) and (~is_lab).sum() == 60
    picked = pq.read_table(rd / "rounds" / "001" / "selection.parquet").column("id").to_numpy()
    assert len(picked) == BUDGET and set(picked) <= set(ids[~is_lab].tolist())


@pytest.mark.parametrize("over, message", [
    ({"strategy": {"name": "cluster_margin", "subset": 10}}, "`subset` applies to the strategies"),
    ({"executor": "local", "strategy": {"name": "kcenter", "distributed": True}}, "needs executor: ray"),
    ({"executor": "local", "train": {"workers": 2}}, "needs executor: ray"),
    ({"executor": "spark"}, "executor"),
    ({"stop_at_accuracy": 1.5}, "stop_at_accuracy"),
])
def test_config_rejects_inconsistent_executor_options(pools, over, message):
    with pytest.raises(DalDistError, match=message):
        parse_config(small_config(*pools, **over))
