"""TypiClust: cluster labeled ∪ unlabeled embeddings, take the most typical point of the least-covered clusters.

Reference: Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High and
Low Budgets", ICML 2022 (the low-budget / cold-start strategy). As their code (avihu111/TypiClust):

* K = min(|L| + B, 500) clusters (k-means; here FAISS k-means, seeded, instead of scikit-learn's
  KMeans/MiniBatchKMeans) over every row, labeled ones included; clusters of ≤ 5 rows are dropped
  (all are kept when that would drop every cluster).
* Clusters are ordered once by (labeled rows in it ascending, size descending) and visited in that
  order, cyclically; each visit picks the unlabeled, not yet picked row of highest typicality
  1 / (mean squared L2 distance to its min(20, n // 2) nearest neighbours + 1e-5), computed among the
  cluster's remaining rows (n of them). A cluster with no row left is skipped.

Cost: one k-means plus, per pick, an exact kNN inside one cluster (O(s²·D), s its size).
On Ray shard actors: `typiclust_sharded` (k-means sample and assignment per shard, one cluster at a time).
"""

from __future__ import annotations

import os

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.selection.io import load_embeddings, scan_scores
from dal_dist.selection.kmeans import kmeans
from dal_dist.selection.topk import check_k

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
K_NN = 20


def typicality(x: np.ndarray, k_nn: int) -> np.ndarray:
    """1 / (mean squared L2 distance to the k_nn nearest other rows + 1e-5), exact (FAISS flat index)."""
    import faiss

    x = np.ascontiguousarray(x, np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    d, _ = index.search(x, k_nn + 1)
    return 1.0 / (d[:, 1:].astype(np.float64).mean(axis=1) + 1e-5)  # column 0: the row itself


def visit_order(sizes: np.ndarray, labeled_counts: np.ndarray) -> np.ndarray:
    """Cluster ids by (labeled count ascending, size descending, id), clusters of ≤ MIN_CLUSTER_SIZE rows
    (and empty ones) dropped unless that drops them all."""
    ids = np.flatnonzero(sizes > 0)
    keep = sizes[ids] > MIN_CLUSTER_SIZE
    if keep.any():
        ids = ids[keep]
    return ids[np.lexsort((ids, -sizes[ids], labeled_counts[ids]))]


def pick_clusters(sizes: np.ndarray, labeled_counts: np.ndarray, k: int) -> np.ndarray:
    """The cluster of each of the k picks, in pick order: clusters visited cyclically in `visit_order`, one
    pick per visit while they have unlabeled rows left (then the dropped small clusters too)."""
    order = visit_order(sizes, labeled_counts)
    left = np.asarray(sizes, np.int64) - labeled_counts
    seq, visit = np.empty(k, np.int64), 0
    t = 0
    while t < k:
        if not left[order].any():  # only dropped (small) clusters have rows left: visit those too
            order = np.flatnonzero(left)
        c = order[visit % len(order)]
        visit += 1
        if left[c] == 0:
            continue
        seq[t] = c
        left[c] -= 1
        t += 1
    return seq


def typical_picks(x: np.ndarray, picks: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows of x in pick order, typicality at pick): `picks` times the most typical row among those left."""
    free = np.ones(len(x), bool)
    rows_out, typ_out = np.empty(picks, np.int64), np.empty(picks, np.float64)
    for t in range(picks):
        rows = np.flatnonzero(free)
        ty = typicality(x[rows], min(K_NN, len(rows) // 2)) if len(rows) > 1 else np.ones(1)
        j = int(np.argmax(ty))
        rows_out[t], typ_out[t] = rows[j], ty[j]
        free[rows[j]] = False
    return rows_out, typ_out


def interleave(seq: np.ndarray, per_cluster: dict[int, tuple[np.ndarray, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, typicality) in pick order: the t-th pick takes the next of its cluster's own picks."""
    rows, typ = np.empty(len(seq), np.int64), np.empty(len(seq), np.float64)
    taken: dict[int, int] = {}
    for t, c in enumerate(seq.tolist()):
        i = taken.get(c, 0)
        rows[t], typ[t] = per_cluster[c][0][i], per_cluster[c][1][i]
        taken[c] = i + 1
    return rows, typ


def typiclust(embeddings: np.ndarray, labeled: np.ndarray, k: int, *, seed: int = 0,
              max_clusters: int = MAX_CLUSTERS) -> tuple[np.ndarray, np.ndarray]:
    """(rows in pick order, typicality at pick): TypiClust over all rows; `labeled` marks existing labels.

    A cluster's picks depend only on its own rows, so each cluster's are made at once (`typical_picks`) and
    interleaved in visit order (`pick_clusters`): the same picks as visiting them one at a time.
    """
    x = np.asarray(embeddings)
    labeled = np.asarray(labeled, bool)
    check_typiclust_inputs(x, labeled, k, max_clusters)
    clusters = typiclust_clusters(int(labeled.sum()), k, max_clusters, len(x))
    assign = kmeans(x, clusters, seed)[0]
    sizes = np.bincount(assign, minlength=clusters)
    seq = pick_clusters(sizes, np.bincount(assign[labeled], minlength=clusters), k)
    members = np.split(np.argsort(assign, kind="stable"), np.cumsum(sizes)[:-1])
    per_cluster = {}
    for c, p in zip(*np.unique(seq, return_counts=True)):
        rows = members[c][~labeled[members[c]]]
        local, typ = typical_picks(x[rows], int(p))
        per_cluster[int(c)] = (rows[local], typ)
    return interleave(seq, per_cluster)


def typiclust_clusters(num_labeled: int, k: int, max_clusters: int, n: int) -> int:
    """K = min(|L| + B, max_clusters, N): TypiClust's number of clusters."""
    return int(min(num_labeled + k, max_clusters, n))


def check_max_clusters(max_clusters: int) -> None:
    """TypiClust's cluster cap (`--clusters`) a positive integer, refused before any work."""
    if not isinstance(max_clusters, (int, np.integer)) or max_clusters < 1:
        raise DalDistError(f"clusters (--clusters) = {max_clusters}: expected a positive integer")


def check_typiclust_inputs(x: np.ndarray, labeled: np.ndarray, k: int, max_clusters: int) -> None:
    """Shapes, k ≤ unlabeled rows, finite values, max_clusters >= 1: refused before any work."""
    if x.ndim != 2 or labeled.shape != (len(x),):
        raise DalDistError(f"embeddings {x.shape} and labeled {labeled.shape}: expected (N, D) and (N,)")
    check_max_clusters(max_clusters)
    check_k(k, int((~labeled).sum()))
    ok = np.isfinite(x).all(axis=1)
    if not ok.all():
        raise DalDistError(f"embeddings: row {int(np.argmin(ok))} has NaN or inf values")


def select_typiclust(scores: str | os.PathLike, k: int, *, labeled_ids: np.ndarray | None = None, seed: int = 0,
                     max_clusters: int = MAX_CLUSTERS) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, typicality): TypiClust over a scores dataset (labeled rows: `--embed-labeled`).
    On Ray shard actors: `kmeans_sharded.select_typiclust_sharded`."""
    scan = scan_scores(scores, labeled_ids=labeled_ids)
    check_k(k, scan.num_candidates)
    check_max_clusters(max_clusters)
    emb = load_embeddings(scan.files, [np.ones(len(i), bool) for i in scan.ids], scan.dim, "float32", scan.ids)
    picks, typ = typiclust(emb, np.concatenate(scan.labeled), k, seed=seed, max_clusters=max_clusters)
    return np.concatenate(scan.ids)[picks], typ
