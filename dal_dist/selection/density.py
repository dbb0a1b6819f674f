"""Information density: an informativeness score weighted by how representative the row is of the pool.

Reference: Settles & Craven, "An Analysis of Active Learning Strategies for Sequence Labeling Tasks",
EMNLP 2008 (information density); in Ren et al.'s survey, "A Survey of Deep Active Learning", 2021.

    value(x) = φ(x) · ( (1/|U|) Σ_{u∈U} cos(x, u) )^β

φ the score column `by` (≥ 0), U the unlabeled rows (x included), cos the cosine similarity of the
embeddings. The mean similarity is exact in O(N·D), not O(N²·D): (1/|U|) Σ_u cos(x, u) = x̂ · m with
m = (1/|U|) Σ_u û (û = u/|u|), and m is a sum over rows, so per-shard partial sums merged by addition
give it on a cluster. A negative mean similarity (embeddings with signed features) counts as 0. The
batch is the top-k by value (ties: lower id).
"""

from __future__ import annotations

import os

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.selection.io import load_embeddings, scan_scores
from dal_dist.selection.stochastic import check_beta
from dal_dist.selection.topk import check_k, chunk_topk


def _unit_block(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float64 (a zero row stays zero)."""
    b = np.asarray(x, np.float64)
    n = np.linalg.norm(b, axis=1, keepdims=True)
    return b / np.where(n > 0, n, 1.0)


def mean_cosine_similarity(x: np.ndarray, block: int = 65536) -> np.ndarray:
    """(1/N) Σ_u cos(x_i, u) for every row i, exactly, in O(N·D): two passes over blocks, no N×D copy."""
    m = np.zeros(x.shape[1])
    for s in range(0, len(x), block):
        m += _unit_block(x[s:s + block]).sum(axis=0)
    m /= len(x)
    out = np.empty(len(x))
    for s in range(0, len(x), block):
        out[s:s + block] = _unit_block(x[s:s + block]) @ m
    return out


def information_density(ids: np.ndarray, scores: np.ndarray, embeddings: np.ndarray, k: int, *,
                        beta: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, value, density) of the top-k by φ · density^β (Settles & Craven 2008), ties by lower id."""
    ids, s, x = np.asarray(ids, np.int64), np.asarray(scores, np.float64), np.asarray(embeddings)
    if x.ndim != 2 or not (len(ids) == len(s) == len(x)):
        raise DalDistError(f"ids {ids.shape}, scores {s.shape}, embeddings {x.shape}: expected one length N")
    check_k(k, len(ids))
    beta = check_beta(beta)
    if not np.isfinite(beta):
        raise DalDistError("beta (--beta) = inf: expected a finite number >= 0 for density")
    if not np.isfinite(s).all():
        raise DalDistError(f"scores: id {ids[np.argmin(np.isfinite(s))]} has a NaN or inf score")
    if s.min() < -1e-6 * max(1.0, float(np.abs(s).max())):
        raise DalDistError(f"density needs scores >= 0 (score × density^beta); the smallest is {s.min():g}")
    ok = np.isfinite(x).all(axis=1)
    if not ok.all():
        raise DalDistError(f"embeddings: id {ids[int(np.argmin(ok))]} has NaN or inf values")
    dens = np.maximum(mean_cosine_similarity(x), 0.0)
    value = np.maximum(s, 0.0) * dens ** beta
    top, val = chunk_topk(ids, value, k)
    pos = np.argsort(ids, kind="stable")
    return top, val, dens[pos[np.searchsorted(ids[pos], top)]]


def select_density(scores: str | os.PathLike, k: int, *, by: str = "bald", beta: float = 1.0,
                   labeled_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, value, density): information density over the unlabeled rows of a scores dataset."""
    beta = check_beta(beta)
    if not np.isfinite(beta):
        raise DalDistError("beta (--beta) = inf: expected a finite number >= 0 for density")
    scan = scan_scores(scores, labeled_ids=labeled_ids, score=by)
    check_k(k, scan.num_candidates)
    keep = [~m for m in scan.labeled]
    s = np.concatenate([v[m] for v, m in zip(scan.scores, keep)])
    emb = load_embeddings(scan.files, keep, scan.dim, "float32", scan.ids)
    return information_density(scan.candidate_ids(), s, emb, k, beta=beta)
