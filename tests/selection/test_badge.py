"""BADGE (Ash et al. 2020): the factorized k-means++ equals brute force on materialized gradient embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import badge_kmeanspp, select
from dal_dist.selection.badge import FactorizedGradients
from selection_helpers import softmax_rows, write_scores


def _brute_g(p, h):
    a = p.astype(np.float64).copy()
    a[np.arange(len(p)), p.argmax(1)] -= 1
    return np.einsum("ic,id->icd", a, h.astype(np.float64)).reshape(len(p), -1)  # the C·D vectors


def test_factorized_distances_equal_materialized():
    rng = np.random.default_rng(0)
    p, h = softmax_rows(rng, 30, 4), rng.standard_normal((30, 6)).astype(np.float32)
    g = _brute_g(p, h)
    f = FactorizedGradients(p, h)
    for c in range(30):
        np.testing.assert_allclose(f.sq_dists(c), ((g - g[c]) ** 2).sum(1), rtol=1e-4, atol=1e-5)


def test_sampling_distribution_matches_brute_force_kmeanspp():
    rng = np.random.default_rng(1)
    n = 6
    p, h = softmax_rows(rng, n, 3), rng.standard_normal((n, 4)).astype(np.float32)
    g = _brute_g(p, h)
    first = int(np.argmax((g ** 2).sum(1)))  # BADGE's first center: the largest gradient norm
    d2 = ((g - g[first]) ** 2).sum(1)
    want = d2 / d2.sum()
    runs = 3000
    second = np.empty(runs, int)
    for s in range(runs):
        picks, _ = badge_kmeanspp(p, h, 2, seed=s)
        assert picks[0] == first
        second[s] = picks[1]
    freq = np.bincount(second, minlength=n) / runs
    assert freq[first] == 0
    assert np.abs(freq - want).max() < 4 * np.sqrt(0.25 / runs), (freq, want)


def test_badge_over_scores_dataset(tmp_path):
    rng = np.random.default_rng(2)
    n = 120
    ids = rng.permutation(1000)[:n].astype(np.int64)
    h = rng.standard_normal((n, 5)).astype(np.float32)
    p = softmax_rows(rng, n, 4)
    labeled = np.zeros(n, bool)
    labeled[:10] = True
    path = write_scores(tmp_path / "s", ids, h, files=3, labeled=labeled, vectors={"probs": p})
    a = select("badge", 15, scores=path, seed=4)
    assert a.column_names == ["id", "d2"]
    got = a.column("id").to_numpy()
    assert len(set(got.tolist())) == 15 and set(got.tolist()) <= set(ids[~labeled].tolist())
    np.testing.assert_array_equal(got, select("badge", 15, scores=path, seed=4).column("id").to_numpy())
    ref, _ = badge_kmeanspp(p[~labeled], h[~labeled], 15, seed=4)  # same rows in dataset order
    np.testing.assert_array_equal(got, ids[~labeled][ref])
    with pytest.raises(DalDistError, match="larger than the number of candidates"):
        select("badge", 111, scores=path)


def test_missing_probs_refused_before_work(scores_dir):
    with pytest.raises(DalDistError, match=r"missing column `probs` \(BADGE needs .*--keep-probs"):
        select("badge", 3, scores=scores_dir[0])


def test_bad_arrays_refused():
    p = np.full((4, 3), 1 / 3, np.float32)
    h = np.ones((4, 2), np.float32)
    h[2, 1] = np.nan
    with pytest.raises(DalDistError, match="embeddings: row 2 has NaN"):
        badge_kmeanspp(p, h, 2)
    with pytest.raises(DalDistError, match="k = 5 is larger"):
        badge_kmeanspp(p, np.ones((4, 2), np.float32), 5)


def test_all_duplicates_still_gives_k_distinct():
    p = np.tile(np.array([[0.7, 0.3]], np.float32), (8, 1))
    h = np.ones((8, 3), np.float32)
    picks, _ = badge_kmeanspp(p, h, 5, seed=0)
    assert len(set(picks.tolist())) == 5
