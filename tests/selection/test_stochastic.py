"""PowerBALD / softmax / softrank (Kirsch et al. 2023): seeded, distinct, β → ∞ is top-k, p ∝ weight."""

from __future__ import annotations

import numpy as np
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import select, stochastic_batch
from dal_dist.selection.stochastic import stochastic_keys
from selection_helpers import write_scores

STOCH = ["powerbald", "softmax", "softrank"]


def _topk(ids, s, k):
    return ids[np.lexsort((ids, -s))[:k]]


@pytest.mark.parametrize("strategy", STOCH)
def test_k_distinct_unlabeled_seeded(scores_dir, strategy):
    path, ids, _, labeled, _ = scores_dir
    a = select(strategy, 40, scores=path, by="bald", seed=5).column("id").to_numpy()
    b = select(strategy, 40, scores=path, by="bald", seed=5).column("id").to_numpy()
    c = select(strategy, 40, scores=path, by="bald", seed=6).column("id").to_numpy()
    assert len(set(a.tolist())) == 40 and set(a.tolist()) <= set(ids[~labeled].tolist())
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("strategy", STOCH)
def test_beta_inf_is_topk_exactly(scores_dir, strategy):
    path, ids, _, labeled, bald = scores_dir  # bald has many ties: broken by lower id as in topk
    got = select(strategy, 25, scores=path, by="bald", beta=float("inf"), seed=3).column("id").to_numpy()
    np.testing.assert_array_equal(got, select("topk", 25, scores=path, by="bald").column("id").to_numpy())


@pytest.mark.parametrize("mode", ["power", "softmax", "softrank"])
def test_large_beta_converges_to_topk(mode):
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000)[:200].astype(np.int64)
    s = rng.random(200) + 0.01  # distinct scores
    np.testing.assert_array_equal(np.sort(stochastic_batch(ids, s, 10, mode=mode, beta=1e9, seed=1)),
                                  np.sort(_topk(ids, s, 10)))


@pytest.mark.parametrize("mode,weight", [("power", lambda s, r: s ** 2), ("softmax", lambda s, r: np.exp(2 * s)),
                                         ("softrank", lambda s, r: r ** -2.0)])
def test_first_draw_probability_matches_weights(mode, weight):
    ids = np.arange(5, dtype=np.int64)
    s = np.array([0.1, 0.4, 0.8, 1.2, 2.0])
    rank = np.array([5, 4, 3, 2, 1], float)
    p = weight(s, rank) / weight(s, rank).sum()
    draws = 4000
    first = np.array([stochastic_batch(ids, s, 1, mode=mode, beta=2.0, seed=t)[0] for t in range(draws)])
    freq = np.bincount(first, minlength=5) / draws
    assert np.abs(freq - p).max() < 4 * np.sqrt(p.max() * (1 - p.min()) / draws) + 1e-3, (freq, p)


def test_keys_do_not_depend_on_the_split():
    ids = np.arange(100, 160, dtype=np.int64)
    s = np.linspace(0, 1, 60)
    whole = stochastic_keys(ids, s, mode="power", beta=1, seed=9)
    parts = np.concatenate([stochastic_keys(ids[:17], s[:17], mode="power", beta=1, seed=9),
                            stochastic_keys(ids[17:], s[17:], mode="power", beta=1, seed=9)])
    np.testing.assert_array_equal(whole, parts)  # per-shard keys + merge_topk = single node


def test_labeled_file_and_bad_input(scores_dir, tmp_path):
    path, ids, _, labeled, _ = scores_dir
    extra = ids[~labeled][:50]
    lab_file = tmp_path / "lab.csv"
    lab_file.write_text("id\n" + "\n".join(map(str, extra)) + "\n")
    got = select("powerbald", 30, scores=path, by="bald", labeled=lab_file, seed=0).column("id").to_numpy()
    assert not set(got.tolist()) & set(extra.tolist())
    with pytest.raises(DalDistError, match="larger than the number of candidates"):
        select("powerbald", 381, scores=path, by="bald")
    with pytest.raises(DalDistError, match=r"beta \(--beta\) = -1"):
        select("softmax", 3, scores=path, by="bald", beta=-1)
    with pytest.raises(DalDistError, match="only used by the strategies"):
        select("kcenter", 3, scores=path, beta=2)
    with pytest.raises(DalDistError, match="missing score column `nope`"):
        select("softrank", 3, scores=path, by="nope")


def test_nan_score_and_negative_power_refused(tmp_path):
    ids = np.arange(30)
    s = np.linspace(-1, 1, 30).astype(np.float32)
    path = write_scores(tmp_path / "neg", ids, np.zeros((30, 2), np.float32), scores={"m": s})
    with pytest.raises(DalDistError, match="power sampling needs scores >= 0"):
        select("powerbald", 3, scores=path, by="m")
    assert len(select("softmax", 3, scores=path, by="m").column("id")) == 3  # signed scores are fine there
    s[4] = np.nan
    path = write_scores(tmp_path / "nan", ids, np.zeros((30, 2), np.float32), scores={"m": s})
    with pytest.raises(DalDistError, match="missing/NaN/inf for id 4"):
        select("softrank", 3, scores=path, by="m")
