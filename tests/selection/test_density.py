"""Information density (Settles & Craven 2008): the O(N·D) mean similarity equals the N×N brute force."""

from __future__ import annotations

import numpy as np
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import information_density, select
from dal_dist.selection.density import mean_cosine_similarity
from selection_helpers import write_scores


def _brute_density(x):
    u = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    return (u @ u.T).mean(axis=1)


def test_mean_similarity_equals_brute_force():
    x = np.random.default_rng(0).standard_normal((70, 5)).astype(np.float32)
    np.testing.assert_allclose(mean_cosine_similarity(x), _brute_density(x), atol=1e-6)
    # the mean direction is a sum over rows: per-shard (block) partial sums merge to the same values
    np.testing.assert_allclose(mean_cosine_similarity(x, block=7), mean_cosine_similarity(x), atol=1e-12)


def test_density_over_scores_dataset_equals_brute_force(scores_dir):
    path, ids, emb, labeled, bald = scores_dir
    emb_u = np.abs(emb[~labeled]) + 0.1  # positive features: similarities > 0
    emb2 = emb.copy()
    emb2[~labeled] = emb_u
    p = write_scores(path.parent / "pos", ids, emb2, files=3, labeled=labeled, scores={"bald": bald})
    for beta in (0.0, 1.0, 2.5):
        t = select("density", 20, scores=p, by="bald", beta=beta, seed=9)
        value = bald[~labeled].astype(np.float64) * _brute_density(emb_u) ** beta
        uid = ids[~labeled]
        want = uid[np.lexsort((uid, -value))[:20]]
        got = t.column("id").to_numpy()
        assert set(got.tolist()) <= set(uid.tolist())
        if beta == 0.0:
            np.testing.assert_array_equal(got, select("topk", 20, scores=p, by="bald").column("id").to_numpy())
        np.testing.assert_array_equal(np.sort(got), np.sort(want))
        assert t.column_names == ["id", "value", "density"]


def test_bad_input_refused(tmp_path):
    ids = np.arange(40)
    x = np.ones((40, 3), np.float32)
    with pytest.raises(DalDistError, match="density needs scores >= 0"):
        information_density(ids, np.linspace(-1, 1, 40), x, 3)
    with pytest.raises(DalDistError, match="k = 41 is larger"):
        information_density(ids, np.ones(40), x, 41)
    s = np.ones(40, np.float32)
    s[7] = np.nan
    path = write_scores(tmp_path / "s", ids, x, scores={"bald": s})
    with pytest.raises(DalDistError, match="missing/NaN/inf for id 7"):
        select("density", 3, scores=path, by="bald")
    with pytest.raises(DalDistError, match="inf: expected a finite"):
        select("density", 3, scores=path, by="bald", beta=float("inf"))
