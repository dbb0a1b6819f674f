"""Stochastic batch acquisition: sample the batch with probabilities from a per-image score (PowerBALD & co.).

Reference: Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, "Stochastic Batch
Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023 (power, softmax and soft-rank
acquisition; in baal as `PowerSampling`).

The batch is k draws without replacement with p_i ∝ w_i, taken in one pass by the Gumbel-top-k trick
(Kool et al. 2019): the k largest perturbed keys log w_i + G_i, G_i ~ Gumbel(0, 1), are exactly such a
sample. The weights:

* power:    w_i = s_i^β          (key β·log s_i + G_i; scores ≤ 0, BALD's rounding error, get the
                                  smallest positive weight; clearly negative scores are refused)
* softmax:  w_i = exp(β·s_i)     (key β·s_i + G_i)
* softrank: w_i = rank_i^-β      (key −β·log rank_i + G_i; rank 1 = the highest score, ties by lower id)

β = 0 is uniform sampling; β = inf is top-k exactly (ties by lower id, as `select_topk`).  Each id's
Gumbel noise is a hash of (seed, id), so the picks do not depend on how the rows are split into files
or shards: a per-shard top-k of the keys merged (`merge_topk`) equals the single-node result.
"""

from __future__ import annotations

import math
import os

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.selection.io import scan_scores
from dal_dist.selection.topk import check_k, chunk_topk

MODES = ("power", "softmax", "softrank")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (Steele et al. 2014) over uint64, vectorized: a well-mixed hash of each value."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def id_gumbels(ids: np.ndarray, seed: int) -> np.ndarray:
    """Gumbel(0, 1) noise per id, a pure function of (seed, id): independent of file order and sharding."""
    key = _splitmix64(np.array([seed], np.uint64))[0]
    z = _splitmix64(np.asarray(ids, np.int64).view(np.uint64) ^ key)
    u = ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
    return -np.log(-np.log(u))


def check_beta(beta: float) -> float:
    """β must be a number >= 0 (inf allowed: top-k)."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise DalDistError(f"beta (--beta) = {beta!r}: expected a number >= 0 (inf: top-k)") from None
    if math.isnan(b) or b < 0:
        raise DalDistError(f"beta (--beta) = {beta}: expected a number >= 0 (inf: top-k)")
    return b


def _ranks(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """1-based rank of each row: higher score first, ties by lower id."""
    r = np.empty(len(ids), np.float64)
    r[np.lexsort((ids, -scores))] = np.arange(1, len(ids) + 1)
    return r


def stochastic_keys(ids: np.ndarray, scores: np.ndarray, *, mode: str = "power", beta: float = 1.0,
                    seed: int = 0) -> np.ndarray:
    """Perturbed keys whose top-k is a k-sample without replacement with p ∝ the mode's weight (finite β)."""
    if mode not in MODES:
        raise DalDistError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    s = np.asarray(scores, np.float64)
    if mode == "power":
        neg = s.min(initial=0.0)
        if neg < -1e-6 * max(1.0, float(np.abs(s).max(initial=0.0))):
            raise DalDistError(f"power sampling needs scores >= 0 (weights s^beta); the smallest is {neg:g}: "
                               "use the softmax or softrank variant for signed scores")
        base = np.log(np.maximum(s, np.finfo(np.float64).tiny))
    elif mode == "softmax":
        base = s
    else:
        base = -np.log(_ranks(np.asarray(ids, np.int64), s))
    with np.errstate(invalid="ignore", over="ignore"):
        keys = beta * base if beta > 0 else np.zeros_like(base)
    return keys + id_gumbels(ids, seed)


def stochastic_batch(ids: np.ndarray, scores: np.ndarray, k: int, *, mode: str = "power", beta: float = 1.0,
                     seed: int = 0) -> np.ndarray:
    """k distinct ids sampled without replacement with p ∝ the mode's weight of their score, in draw order."""
    ids = np.asarray(ids, np.int64)
    scores = np.asarray(scores, np.float64)
    if ids.ndim != 1 or ids.shape != scores.shape:
        raise DalDistError(f"ids {ids.shape} and scores {scores.shape}: expected two 1-D arrays of one length")
    check_k(k, len(ids))
    beta = check_beta(beta)
    if not np.isfinite(scores).all():
        raise DalDistError(f"scores: id {ids[np.argmin(np.isfinite(scores))]} has a NaN or inf score")
    if math.isinf(beta):
        if mode == "power":
            stochastic_keys(ids, scores, mode=mode, beta=1.0, seed=seed)  # same refusal of negative scores
        return chunk_topk(ids, scores, k)[0]  # the limit β → ∞: top-k, ties by lower id
    return chunk_topk(ids, stochastic_keys(ids, scores, mode=mode, beta=beta, seed=seed), k)[0]


def select_stochastic(scores: str | os.PathLike, k: int, *, by: str, mode: str = "power", beta: float = 1.0,
                      labeled_ids: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ids in draw order, their scores): a stochastic batch over the unlabeled rows of a scores dataset."""
    check_beta(beta)
    if mode not in MODES:
        raise DalDistError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    scan = scan_scores(scores, labeled_ids=labeled_ids, score=by, need_embeddings=False)
    check_k(k, scan.num_candidates)
    ids = scan.candidate_ids()
    s = np.concatenate([v[~m] for v, m in zip(scan.scores, scan.labeled)])
    picks = stochastic_batch(ids, s, k, mode=mode, beta=beta, seed=seed)
    return picks, s[_positions(ids, picks)]


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted id in `ids` (all present, ids unique)."""
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids[order], wanted)]


def select_powerbald(scores: str | os.PathLike, k: int, *, by: str = "bald", beta: float = 1.0,
                     labeled_ids: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PowerBALD (Kirsch et al. 2023): p ∝ score^β over column `by`."""
    return select_stochastic(scores, k, by=by, mode="power", beta=beta, labeled_ids=labeled_ids, seed=seed)


def select_softmax(scores: str | os.PathLike, k: int, *, by: str = "bald", beta: float = 1.0,
                   labeled_ids: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax acquisition (Kirsch et al. 2023): p ∝ exp(β·score) over column `by`."""
    return select_stochastic(scores, k, by=by, mode="softmax", beta=beta, labeled_ids=labeled_ids, seed=seed)


def select_softrank(scores: str | os.PathLike, k: int, *, by: str = "bald", beta: float = 1.0,
                    labeled_ids: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Soft-rank acquisition (Kirsch et al. 2023): p ∝ rank^-β by column `by`."""
    return select_stochastic(scores, k, by=by, mode="softrank", beta=beta, labeled_ids=labeled_ids, seed=seed)
