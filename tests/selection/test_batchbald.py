"""BatchBALD (Kirsch et al. 2019): joint entropy = brute-force enumeration, first pick = BALD argmax,
shared dropout masks, and the dataset-level selection over a pool + checkpoint."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import select
from dal_dist.selection.batchbald import JointEntropy, batchbald, conditional_entropies, fixed_mask_probs
from selection_helpers import write_scores


def _probs(rng, n, t, c):
    z = rng.standard_normal((n, t, c)) * 1.5
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)


def _brute_joint_entropy(p):  # p: (n, T, C)
    n, t, c = p.shape
    h = 0.0
    for ys in itertools.product(range(c), repeat=n):
        q = np.mean([np.prod([p[i, s, ys[i]] for i in range(n)]) for s in range(t)])
        h -= q * np.log(q)
    return h


def test_exact_joint_entropy_matches_enumeration():
    rng = np.random.default_rng(0)
    p = _probs(rng, 4, 5, 3)
    j = JointEntropy(5, 3, 10_000, rng)
    for n in range(3):
        got = j.entropies_with(p[n:n + 2])[0]  # H(y_0..y_n-1, y_n)
        np.testing.assert_allclose(got, _brute_joint_entropy(p[:n + 1]), rtol=1e-10)
        j.add(p[n])
    assert j.exact


def test_sampled_joint_entropy_approximates_exact():
    rng = np.random.default_rng(1)
    p = _probs(rng, 5, 6, 3)
    small = JointEntropy(6, 3, 9, np.random.default_rng(2))
    for n in range(3):
        small.add(p[n])
    assert not small.exact and small.rows.shape == (9, 6)  # 3^3 > 9: switched to 9 sampled configurations
    exact = JointEntropy(6, 3, 100_000, np.random.default_rng(3))
    for n in range(4):
        exact.add(p[n])
    assert exact.exact
    want = _brute_joint_entropy(p[:5])
    np.testing.assert_allclose(exact.entropies_with(p[4:5])[0], want, rtol=1e-10)
    sampled = JointEntropy(6, 3, 20_000, np.random.default_rng(4))
    sampled.rows, sampled.exact = exact.rows, True
    sampled.max_rows = 20_000
    q = exact.rows.mean(1)
    sampled.rows = exact.rows[np.random.default_rng(4).choice(len(q), size=20_000, p=q / q.sum())]
    sampled.exact = False  # 20,000 configurations drawn from p(y_0..y_3)
    np.testing.assert_allclose(sampled.entropies_with(p[4:5])[0], want, rtol=0.02)


def test_first_pick_is_bald_argmax_and_picks_are_seeded_and_distinct():
    rng = np.random.default_rng(5)
    p = _probs(rng, 40, 8, 4)
    mean = p.mean(1)
    bald = -(mean * np.log(mean)).sum(-1) - conditional_entropies(p)
    picks, mi = batchbald(p, 12, joint_samples=200, seed=1)
    assert picks[0] == int(np.argmax(bald))
    np.testing.assert_allclose(mi[0], bald.max(), rtol=1e-10)
    assert len(set(picks.tolist())) == 12
    np.testing.assert_array_equal(picks, batchbald(p, 12, joint_samples=200, seed=1)[0])


def test_duplicates_are_not_picked_twice_in_a_row():
    rng = np.random.default_rng(6)
    p = _probs(rng, 6, 10, 3)
    p = np.concatenate([p, p[:1]])  # row 6 duplicates row 0
    picks, _ = batchbald(p, 3, seed=0)
    assert not {0, 6} <= set(picks[:2].tolist())  # the duplicate adds no information


def test_bad_arrays_refused():
    p = np.full((5, 3, 2), 0.5)
    with pytest.raises(DalDistError, match="k = 6 is larger"):
        batchbald(p, 6)
    p[2, 1, 0] = np.nan
    with pytest.raises(DalDistError, match="candidate 2 has NaN"):
        batchbald(p, 2)


@pytest.fixture(scope="module")
def pool_and_model(tmp_path_factory):
    from dal_dist.models import build_model, default_config, save_checkpoint
    from dal_dist.pool import write_pool

    tmp = tmp_path_factory.mktemp("bb")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 28, 28, 1), dtype=np.uint8)
    write_pool(tmp / "pool", images, rng.integers(0, 10, 60), ids=np.arange(100, 160))
    model = build_model(default_config("mnist-cnn", 10, seed=0))
    save_checkpoint(model, tmp / "m.pt")
    ids = np.arange(100, 160)
    bald = np.round(rng.random(60), 3).astype(np.float32)
    scores = write_scores(tmp / "scores", ids, np.zeros((60, 2), np.float32), files=2, scores={"bald": bald})
    return tmp, images, model, ids, bald, scores


def test_masks_are_shared_across_images(pool_and_model):
    _, images, model, *_ = pool_and_model
    together = fixed_mask_probs(model, images[:8], 4, seed=3, batch_size=8)
    alone = np.concatenate([fixed_mask_probs(model, images[i:i + 1], 4, seed=3) for i in range(8)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(together[:, 0], together[:, 1])  # different samples, different masks


def test_select_over_pool_and_checkpoint(pool_and_model, tmp_path):
    tmp, images, model, ids, bald, scores = pool_and_model
    lab = tmp_path / "lab.csv"
    lab.write_text("id\n100\n101\n")
    t = select("batchbald", 5, scores=scores, pool=tmp / "pool", checkpoint=tmp / "m.pt", candidates=20,
               mc_samples=4, labeled=lab, seed=1)
    got = t.column("id").to_numpy()
    assert t.column_names == ["id", "batch_mi"] and np.all(np.diff(t.column("batch_mi").to_numpy()) >= -1e-9)
    keep = ~np.isin(ids, [100, 101])
    top = ids[keep][np.lexsort((ids[keep], -bald[keep].astype(np.float64)))[:20]]
    assert set(got.tolist()) <= set(top.tolist()) and len(set(got.tolist())) == 5
    probs = fixed_mask_probs(model, images[top - 100], 4, seed=1)
    np.testing.assert_array_equal(got, top[batchbald(probs, 5, seed=1)[0]])
    again = select("batchbald", 5, scores=scores, pool=tmp / "pool", checkpoint=tmp / "m.pt", candidates=20,
                   mc_samples=4, labeled=lab, seed=1)
    assert again.equals(t)
    with pytest.raises(DalDistError, match="needs --pool DIR and --checkpoint"):
        select("batchbald", 5, scores=scores)
    with pytest.raises(DalDistError, match="k = 21 is larger than --candidates = 20"):
        select("batchbald", 21, scores=scores, pool=tmp / "pool", checkpoint=tmp / "m.pt", candidates=20)
