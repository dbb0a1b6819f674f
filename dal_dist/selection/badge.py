"""BADGE: k-means++ seeding on gradient embeddings, factorized so no C·D vector is ever formed.

Reference: Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds", ICLR 2020.

The gradient embedding of row i is g_i = a_i ⊗ h_i with a_i = p_i − onehot(argmax p_i) (C values, the
mean softmax with dropout off) and h_i its penultimate embedding (D values). Since
⟨g_i, g_j⟩ = ⟨a_i, a_j⟩·⟨h_i, h_j⟩, the squared distance to a new center c is

    ||g_i − g_c||² = |a_i|²|h_i|² + |a_c|²|h_c|² − 2⟨a_i, a_c⟩⟨h_i, h_c⟩,

one N×C and one N×D product per pick (O(N(C + D)) time, the N×C and N×D arrays plus O(N) in memory)
instead of BADGE's reference code's N×(C·D) matrix. The seeding is theirs: the first center is the
row of largest |g| (ties: lowest row); each next one is drawn with probability D²(i)/Σ D² (exact
k-means++), D² the squared distance to the nearest chosen center, with `np.random.default_rng(seed)`.
On Ray shard actors: `badge_sharded` (each shard keeps its rows' D², the driver draws across shards).
"""

from __future__ import annotations

import os

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.selection.io import load_embeddings, scan_scores
from dal_dist.selection.topk import check_k
from dal_dist.selection.vectors import check_vector_column, load_vector_column

PROBS_COLUMN = "probs"


class FactorizedGradients:
    """Squared distances between BADGE gradient embeddings (p − onehot(ŷ)) ⊗ h without forming them."""

    def __init__(self, probs: np.ndarray, embeddings: np.ndarray) -> None:
        p = np.asarray(probs, np.float32)
        self.a = p.copy()
        self.a[np.arange(len(p)), np.argmax(p, axis=1)] -= 1.0
        self.h = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.a2 = np.einsum("ij,ij->i", self.a, self.a, dtype=np.float64)
        self.h2 = np.einsum("ij,ij->i", self.h, self.h, dtype=np.float64)
        self.norm2 = self.a2 * self.h2  # |g_i|²
        self._ac, self._hc = np.empty(len(p), np.float32), np.empty(len(p), np.float32)  # reused per pick

    def sq_dists(self, c: int, out: np.ndarray | None = None) -> np.ndarray:
        """||g_i − g_c||² for every row i (float64, clamped at 0 against rounding), into `out` when given."""
        return self.sq_dists_to(self.center(c), out)

    def center(self, c: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Row c's factors (a_c, h_c, |g_c|²): what another shard needs to measure distances to it."""
        return self.a[c].copy(), self.h[c].copy(), float(self.norm2[c])

    def sq_dists_to(self, center: tuple[np.ndarray, np.ndarray, float], out: np.ndarray | None = None
                    ) -> np.ndarray:
        """||g_i − g_c||² for every row i to a center given by its factors (the same arithmetic as `sq_dists`)."""
        a_c, h_c, norm2_c = center
        if out is None:
            out = np.empty(len(self.a2), np.float64)
        np.dot(self.a, a_c, out=self._ac)
        np.dot(self.h, h_c, out=self._hc)
        np.multiply(self._ac, self._hc, out=out, dtype=np.float64)
        out *= -2.0
        out += self.norm2
        out += norm2_c
        return np.maximum(out, 0.0, out=out)


def check_badge_inputs(probs: np.ndarray, embeddings: np.ndarray, k: int) -> None:
    """Shapes, k in range, finite values: refused before any work."""
    if probs.ndim != 2 or embeddings.ndim != 2 or len(probs) != len(embeddings):
        raise DalDistError(f"probs {probs.shape} and embeddings {embeddings.shape}: expected (N, C) and (N, D)")
    if probs.shape[1] < 2:
        raise DalDistError(f"probs: {probs.shape[1]} classes, expected at least 2")
    check_k(k, len(probs))
    for name, x in (("probs", probs), ("embeddings", embeddings)):
        ok = np.isfinite(x).all(axis=1)
        if not ok.all():
            raise DalDistError(f"{name}: row {int(np.argmin(ok))} has NaN or inf values")


def badge_kmeanspp(probs: np.ndarray, embeddings: np.ndarray, k: int, *, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(rows in pick order, D² at pick time): BADGE's k-means++ seeding (Ash et al. 2020), factorized.

    The first D² is |g| of the first center (no center yet); when every remaining row coincides with a
    center (Σ D² = 0) the next pick is uniform over the rows not yet picked.
    """
    probs, embeddings = np.asarray(probs), np.asarray(embeddings)
    check_badge_inputs(probs, embeddings, k)
    g = FactorizedGradients(probs, embeddings)
    rng = np.random.default_rng(seed)
    picks = np.empty(k, np.int64)
    d2_at = np.empty(k, np.float64)
    c = int(np.argmax(g.norm2))
    picks[0], d2_at[0] = c, g.norm2[c]
    d2 = g.sq_dists(c)
    buf = np.empty_like(d2)
    chosen = np.zeros(len(probs), bool)
    chosen[c] = True
    d2[c] = 0.0
    for t in range(1, k):
        c = kmeanspp_draw(d2, chosen, rng)
        picks[t], d2_at[t] = c, d2[c]
        chosen[c] = True
        np.minimum(d2, g.sq_dists(c, buf), out=d2)
        d2[c] = 0.0  # a picked row stays at 0 (the minimum never raises it)
    return picks, d2_at


def kmeanspp_draw(d2: np.ndarray, chosen: np.ndarray, rng: np.random.Generator) -> int:
    """One k-means++ draw: row i with probability d2[i] / Σ d2 (uniform over unchosen rows when Σ d2 = 0)."""
    cum = np.cumsum(d2)
    total = cum[-1]
    if not total > 0:
        return int(rng.choice(np.flatnonzero(~chosen)))
    return row_at(d2, cum, rng.random() * total)


def row_at(d2: np.ndarray, cum: np.ndarray, target: float) -> int:
    """The row whose cumulative-weight interval holds `target` (cum = cumsum(d2)); past the end: the last
    row of positive weight (u·total rounded up to the total)."""
    i = min(int(np.searchsorted(cum, target, side="right")), len(d2) - 1)
    if d2[i] > 0:
        return i
    return int(np.flatnonzero(d2 > 0)[-1])


def check_probs_column(files: list[str]) -> int:
    """The width C of the `probs` column BADGE needs, refused (naming the file) before any work."""
    return check_vector_column(files, PROBS_COLUMN, "BADGE needs the mean probabilities: score with "
                               "--keep-probs (keep_probs=True)")


def select_badge(scores: str | os.PathLike, k: int, *, labeled_ids: np.ndarray | None = None, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, D² at pick time): BADGE over the unlabeled rows of a scores dataset.

    Needs the `probs` column (`dal-dist score --keep-probs`) beside `embedding`. On Ray shard actors:
    `badge_sharded.select_badge_sharded`.
    """
    scan = scan_scores(scores, labeled_ids=labeled_ids)
    check_k(k, scan.num_candidates)
    width = check_probs_column(scan.files)
    keep = [~m for m in scan.labeled]
    probs = load_vector_column(scan.files, keep, PROBS_COLUMN, width, scan.ids)
    emb = load_embeddings(scan.files, keep, scan.dim, "float32", scan.ids)
    picks, d2 = badge_kmeanspp(probs, emb, k, seed=seed)
    return scan.candidate_ids()[picks], d2
