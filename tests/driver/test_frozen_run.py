"""Frozen backbone: embed once, then rounds that train and score only a dropout head on the cached embeddings."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from dal_dist.driver import run
from dal_dist.driver.config import parse_config
from dal_dist.driver.ledger import LabelLedger
from dal_dist.errors import DalDistError
from dal_dist.pool import write_pool
from dal_dist.scoring import embed_pool


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, mnist_test_dir):
    """600 real MNIST digits as the pool, 400 others as the test pool, both embedded once by mnist-cnn."""
    d = tmp_path_factory.mktemp("frozen")
    with gzip.open(mnist_test_dir / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:1000]
    with gzip.open(mnist_test_dir / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:1000].astype(np.int64)
    write_pool(d / "pool", x[:600], y[:600], chunk_rows=256)
    write_pool(d / "test", x[600:], y[600:], chunk_rows=256)
    for name in ("pool", "test"):
        embed_pool(d / name, d / f"{name}-emb", model="mnist-cnn", executor="local", progress=False)
    return d


def _config(d, strategy: str, **model) -> dict:
    return {"pool": str(d / "pool"), "test_pool": str(d / "test"),
            "model": {"name": "mnist-cnn", "backbone": "frozen", "embeddings": str(d / "pool-emb"),
                      "test_embeddings": str(d / "test-emb"), **model},
            "strategy": {"name": strategy, "mc_samples": 10}, "initial": {"kind": "balanced", "size": 30},
            "budget": 30, "rounds": 2, "train": {"epochs": 40, "batch_size": 32, "lr": 0.003, "workers": 1},
            "workers": 1, "seed": 0, "executor": "local"}


def test_bald_rounds_on_cached_embeddings_decode_no_image(tmp_path, embedded, monkeypatch):
    def no_decode(*a, **k):
        raise AssertionError("a frozen-backbone round decoded images")

    monkeypatch.setattr("dal_dist.driver.steps.read_images", no_decode)
    monkeypatch.setattr("dal_dist.driver.steps.read_labeled_images", no_decode)
    monkeypatch.setattr("dal_dist.scoring.scorer.BatchScorer.image_inputs", no_decode)
    monkeypatch.setattr("dal_dist.pool.decode_photos", no_decode)
    out = run(parse_config(_config(embedded, "bald")), tmp_path / "run")
    assert out.status == "done"
    ledger = LabelLedger(tmp_path / "run").table()
    assert ledger.num_rows == 90 and len(set(ledger.column("id").to_pylist())) == 90
    acc = []
    for r in (1, 2, 3):
        rd = tmp_path / "run" / "rounds" / f"{r:03d}"
        train = json.loads((rd / "train.json").read_text())
        assert train["backbone"] == "frozen" and train["labels"] == 30 * r
        acc.append(json.loads((rd / "metrics.json").read_text())["test_accuracy"])
        if r < 3:  # scores of every unlabeled row, from the head over the cached embeddings
            scores = pq.read_table(rd / "scores")
            assert scores.num_rows == 600 - 30 * r
            assert "embedding" not in scores.column_names  # top-k never reads it: the cached rows are not copied
    assert min(acc) > 0.45 and acc[-1] > acc[0], acc  # random conv features + a head, 400 real test digits


def test_kcenter_on_the_cached_embeddings(tmp_path, embedded):
    cfg = _config(embedded, "kcenter", hidden=32)
    cfg.update(rounds=1, final_train=False)
    assert run(parse_config(cfg), tmp_path / "run").status == "done"
    scores = pq.read_table(tmp_path / "run" / "rounds" / "001" / "scores")
    assert scores.num_rows == 600 and scores.column("labeled").to_numpy(zero_copy_only=False).sum() == 30
    assert scores.schema.field("embedding").type.list_size == 32  # the head's hidden layer, which runs once
    ids = LabelLedger(tmp_path / "run").table().column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 60


def test_distributed_badge_round_picks_what_one_process_picks(tmp_path, embedded, ray_local):
    """`strategy.distributed` on the Ray executor: BADGE's picks come from shard actors, equal to one node's."""
    from dal_dist.driver.steps import round_seed
    from dal_dist.selection import select

    cfg = _config(embedded, "badge", hidden=32)
    cfg.update(rounds=1, final_train=False, executor="ray", workers=2)
    cfg["strategy"]["distributed"] = True
    parsed = parse_config(cfg)
    assert run(parsed, tmp_path / "run").status == "done"
    rd = tmp_path / "run" / "rounds" / "001"
    picked = pq.read_table(rd / "selection.parquet").column("id").to_numpy()
    one = select("badge", 30, scores=rd / "scores", seed=round_seed(parsed.seed, 1, "select"))
    assert picked.tolist() == one.column("id").to_pylist()
    with pytest.raises(DalDistError, match="needs executor: ray"):
        parse_config({**cfg, "executor": "local"})


@pytest.mark.parametrize("model, strategy, message", [
    ({"backbone": "frozen"}, "bald", "needs model.embeddings"),
    ({"embeddings": "e"}, "bald", "model.embeddings is only used with model.backbone: frozen"),
    ({"backbone": "frozen", "embeddings": "e", "test_embeddings": "t", "weights": "w.pt"}, "bald",
     "model.weights describes the backbone"),
    ({"backbone": "frozen", "embeddings": "e", "test_embeddings": "t"}, "sraal", "does not run with model.backbone"),
])
def test_frozen_configs_that_cannot_work_are_refused(model, strategy, message):
    cfg = {"pool": "p", "test_pool": "t", "model": {"name": "mnist-cnn", **model}, "strategy": {"name": strategy},
           "budget": 1, "rounds": 1}
    with pytest.raises(DalDistError, match=message):
        parse_config(cfg)


def test_embeddings_of_another_backbone_are_refused(tmp_path, embedded):
    cfg = _config(embedded, "bald")
    cfg["model"]["name"] = "resnet18"
    with pytest.raises(DalDistError, match="made by model 'mnist-cnn', but model.name is 'resnet18'"):
        run(parse_config(cfg), tmp_path / "run")
