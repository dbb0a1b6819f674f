"""BADGE's k-means++ seeding on Ray shard actors: each shard keeps its rows' D², the driver draws across shards.

The draw of `badge_kmeanspp` is "row i with probability D²(i) / Σ D²". Split over contiguous shards it is
two steps with the same single uniform number u: the shard whose cumulative interval of Σ D² holds
u·Σ D² (shard totals in global order), then the row inside that shard at the remaining offset. Per pick:
one call to every shard (lower D² with the new center, return the shard's Σ D²), one to the drawn shard
(its row, D² and factors), a C + D float payload each way. The picks are `badge_kmeanspp`'s with the same
seed, except when u·Σ D² falls within float64 rounding of a boundary between two rows (the totals are
summed per shard, not in one running sum): the same sampling distribution in any case. A dead shard is
rebuilt and replayed (`selection.shards`).
"""

from __future__ import annotations

import math
import os
import time
import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.ray_connect import connect
from dal_dist.selection.badge import PROBS_COLUMN, FactorizedGradients, check_badge_inputs, check_probs_column, row_at
from dal_dist.selection.io import ScoresScan, load_embeddings, scan_scores
from dal_dist.selection.shards import ShardGroup, plan_shards, shard_candidates, shard_files
from dal_dist.selection.topk import check_k
from dal_dist.selection.vectors import load_vector_column


class BadgeShard:
    """One shard's gradient factors and D² to the chosen centers (the Ray actor body)."""

    def __init__(self, files: list[str], keep: list[np.ndarray], labeled: list[np.ndarray], ids: list[np.ndarray],
                 dim: int, width: int) -> None:
        self.error: DalDistError | None = None
        self.g: FactorizedGradients | None = None
        try:  # bad input is kept and raised by the first call: a failed constructor loses the message
            probs = load_vector_column(files, keep, PROBS_COLUMN, width, ids)
            emb = load_embeddings(files, keep, dim, "float32", ids)
            if len(probs):
                check_badge_inputs(probs, emb, 1)
                self.g = FactorizedGradients(probs, emb)
        except DalDistError as e:
            self.error = e
        self.d2: np.ndarray | None = None
        self.buf: np.ndarray | None = None
        self.cum: np.ndarray | None = None
        self.chosen: np.ndarray | None = None

    def largest(self) -> tuple[float, int]:
        """(largest |g|², its lowest local row): the first center is the global one; (-inf, -1) when empty."""
        if self.error is not None:
            raise self.error
        if self.g is None:
            return -math.inf, -1
        i = int(np.argmax(self.g.norm2))
        return float(self.g.norm2[i]), i

    def center(self, i: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Local row i's factors (a, h, |g|²)."""
        return self.g.center(i)

    def add_center(self, center: tuple[np.ndarray, np.ndarray, float], chosen: int) -> tuple[float, int]:
        """Lower D² with a new center (our row `chosen` if it is ours, else -1): (Σ D², rows not chosen)."""
        if self.g is None:
            return 0.0, 0
        if self.d2 is None:
            self.d2 = self.g.sq_dists_to(center)
            self.buf = np.empty_like(self.d2)  # reused every pick, as in `badge_kmeanspp`
            self.chosen = np.zeros(len(self.d2), bool)
        else:
            np.minimum(self.d2, self.g.sq_dists_to(center, self.buf), out=self.d2)
        if chosen >= 0:
            self.chosen[chosen] = True
            self.d2[chosen] = 0.0
        self.cum = np.cumsum(self.d2)
        return float(self.cum[-1]), int((~self.chosen).sum())

    def draw(self, target: float) -> tuple[int, float, tuple[np.ndarray, np.ndarray, float]]:
        """The row at cumulative weight `target` in this shard: (local row, its D², its factors)."""
        i = row_at(self.d2, self.cum, target)
        return i, float(self.d2[i]), self.g.center(i)

    def unchosen(self, j: int) -> tuple[int, float, tuple[np.ndarray, np.ndarray, float]]:
        """The j-th not yet chosen row (the uniform draw when every D² is 0)."""
        i = int(np.flatnonzero(~self.chosen)[j])
        return i, float(self.d2[i]), self.g.center(i)


def shard_of(weights: np.ndarray, target: float) -> tuple[int, float]:
    """(shard, offset inside it) of `target` on the shards' cumulative weights; past the end: the last shard
    with weight, at its end (the single-node rule: the last row of positive weight)."""
    cum = np.cumsum(weights)
    s = int(np.searchsorted(cum, target, side="right"))
    if s >= len(weights) or weights[s] <= 0:
        s = int(np.flatnonzero(weights > 0)[-1])
        return s, float(weights[s])
    return s, float(target - (cum[s - 1] if s else 0.0))


def badge_kmeanspp_sharded(scan: ScoresScan, k: int, *, width: int, workers: int = 2, seed: int = 0,
                           actor_cpus: float = 1, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, D² at pick time): `badge_kmeanspp` over a scanned scores dataset on `workers`
    Ray actors, for pools whose probabilities and embeddings do not fit one process."""
    check_k(k, scan.num_candidates)
    connect()
    shards = plan_shards(scan, workers)
    offsets, cand_ids = shard_candidates(scan, shards)
    group = ShardGroup(BadgeShard, lambda j: {**shard_files(scan, shards[j]), "dim": scan.dim, "width": width},
                       len(shards), actor_cpus=actor_cpus)
    rng = np.random.default_rng(seed)
    picks, d2_at = np.empty(k, np.int64), np.empty(k, np.float64)
    steps: list[float] = []
    try:
        best = group.call("largest")
        s = max(range(len(best)), key=lambda j: (best[j][0], -j))  # ties: the lowest global row
        local, d2 = best[s][1], best[s][0]
        center = group.call_one(s, "center", local)
        for t in range(k):
            picks[t], d2_at[t] = offsets[s] + local, d2
            if t == k - 1:
                break
            t0 = time.perf_counter()
            out = group.call("add_center", per_shard=[(center, local if j == s else -1) for j in range(len(group))],
                             mutates=True)
            weights = np.array([w for w, _ in out])
            if not weights.sum() > 0:  # every row left coincides with a center: uniform over the rows left
                free = np.array([f for _, f in out])
                g = int(rng.integers(0, free.sum()))  # the draw rng.choice(rows left) makes on one node
                s = int(np.searchsorted(np.cumsum(free), g, side="right"))
                local, d2, center = group.call_one(s, "unchosen", g - int(free[:s].sum()))
            else:
                s, offset = shard_of(weights, rng.random() * weights.sum())
                local, d2, center = group.call_one(s, "draw", offset)
            steps.append(time.perf_counter() - t0)
    finally:
        group.kill()
    if stats is not None:
        stats.update(workers=len(shards), restarts=sum(group.restarts),
                     s_per_pick=float(np.mean(steps)) if steps else 0.0)
    return cand_ids[picks], d2_at



def select_badge_sharded(scores: str | os.PathLike, k: int, *, labeled_ids: np.ndarray | None = None, seed: int = 0,
                         workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, D² at pick time): `select_badge` with the rows on `workers` Ray shard actors."""
    scan = scan_scores(scores, labeled_ids=labeled_ids)
    check_k(k, scan.num_candidates)
    return badge_kmeanspp_sharded(scan, k, width=check_probs_column(scan.files), workers=workers, seed=seed)
