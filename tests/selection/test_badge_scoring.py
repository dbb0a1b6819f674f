"""`score_pool(keep_probs=True)` writes `probs` (mean softmax, dropout off) and BADGE selects over it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from dal_dist.models import build_model, default_config, preprocess, save_checkpoint
from dal_dist.pool import write_pool
from dal_dist.scoring import read_scores_table, score_pool
from dal_dist.scoring.scorer import vector_type
from dal_dist.selection import select


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("badge_scoring")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (90, 28, 28, 1), dtype=np.uint8)
    write_pool(tmp / "pool", images, rng.integers(0, 10, 90), chunk_rows=40)
    model = build_model(default_config("mnist-cnn", 10, seed=0))
    save_checkpoint(model, tmp / "m.pt")
    score_pool(tmp / "pool", tmp / "m.pt", tmp / "scores", acquisitions="bald", mc_samples=3,
               labeled=np.arange(10), executor="local", progress=False, keep_probs=True, batch_size=32)
    score_pool(tmp / "pool", tmp / "m.pt", tmp / "plain", acquisitions="bald", mc_samples=3,
               executor="local", progress=False, batch_size=32)
    return tmp, images, model


def test_probs_column_is_the_dropout_off_softmax(scored):
    tmp, images, model = scored
    t = read_scores_table(tmp / "scores").sort_by("id")
    assert t.schema.field("probs").type == vector_type(pa.float32(), 10)
    probs = np.stack(t.column("probs").to_numpy(zero_copy_only=False))
    ids = t.column("id").to_numpy()
    model.eval()
    with torch.inference_mode():
        x = preprocess(torch.from_numpy(images[ids]), model.config)
        want = torch.softmax(model.head(model.features(x)), -1).numpy()
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-6)
    assert "probs" not in read_scores_table(tmp / "plain").column_names  # only when asked


def test_badge_runs_on_scored_output(scored):
    tmp = scored[0]
    got = select("badge", 8, scores=tmp / "scores", seed=1).column("id").to_numpy()
    assert len(set(got.tolist())) == 8 and got.min() >= 10
