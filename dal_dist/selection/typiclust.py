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
Single node.
"""

from __future__ import annotations

import os

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.selection.io import load_embeddings, scan_scores
from dal_dist.selection.topk import check_k

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
K_NN = 20


def kmeans(x: np.ndarray, clusters: int, seed: int = 0, niter: int = 20,
           max_points_per_centroid: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id of every row, centroids): FAISS k-means (seeded; trained on a seeded sample of at most
    max_points_per_centroid rows per centroid, then every row assigned to its nearest centroid)."""
    import faiss

    x = np.ascontiguousarray(x, np.float32)
    km = faiss.Kmeans(x.shape[1], int(clusters), niter=niter, seed=int(seed) % (2**31), verbose=False,
                      max_points_per_centroid=max_points_per_centroid)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64), np.asarray(km.centroids, np.float32)


def kmeans_labels(x: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """The cluster id of every row after `kmeans`."""
    return kmeans(x, clusters, seed)[0]


def typicality(x: np.ndarray, k_nn: int) -> np.ndarray:
    """1 / (mean squared L2 distance to the k_nn nearest other rows + 1e-5), exact (FAISS flat index)."""
    import faiss

    x = np.ascontiguousarray(x, np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    d, _ = index.search(x, k_nn + 1)
    return 1.0 / (d[:, 1:].astype(np.float64).mean(axis=1) + 1e-5)  # column 0: the row itself


def cluster_visit_order(assign: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """Cluster ids by (labeled count ascending, size descending, id), clusters of ≤ MIN_CLUSTER_SIZE dropped."""
    ids, sizes = np.unique(assign, return_counts=True)
    existing = np.array([int((labeled & (assign == c)).sum()) for c in ids])
    keep = sizes > MIN_CLUSTER_SIZE
    if not keep.any():
        keep[:] = True
    ids, sizes, existing = ids[keep], sizes[keep], existing[keep]
    return ids[np.lexsort((ids, -sizes, existing))]


def typiclust(embeddings: np.ndarray, labeled: np.ndarray, k: int, *, seed: int = 0,
              max_clusters: int = MAX_CLUSTERS) -> tuple[np.ndarray, np.ndarray]:
    """(rows in pick order, typicality at pick): TypiClust over all rows; `labeled` marks existing labels."""
    x = np.asarray(embeddings)
    labeled = np.asarray(labeled, bool)
    check_typiclust_inputs(x, labeled, k, max_clusters)
    clusters = min(int(labeled.sum()) + k, max_clusters, len(x))
    assign = kmeans_labels(x, clusters, seed)
    order = cluster_visit_order(assign, labeled)
    members = np.split(np.argsort(assign, kind="stable"), np.cumsum(np.bincount(assign, minlength=clusters))[:-1])
    free = ~labeled
    left = np.bincount(assign[free], minlength=clusters)
    picks, typ = np.empty(k, np.int64), np.empty(k, np.float64)
    t, visit = 0, 0
    while t < k:
        if not left[order].any():  # only dropped (small) clusters have rows left: visit those too
            order = np.flatnonzero(left)
        c = order[visit % len(order)]
        visit += 1
        if left[c] == 0:
            continue
        rows = members[c][free[members[c]]]
        ty = typicality(x[rows], min(K_NN, len(rows) // 2)) if len(rows) > 1 else np.ones(1)
        j = int(np.argmax(ty))
        picks[t], typ[t] = rows[j], ty[j]
        free[rows[j]] = False
        left[c] -= 1
        t += 1
    return picks, typ


def check_typiclust_inputs(x: np.ndarray, labeled: np.ndarray, k: int, max_clusters: int) -> None:
    """Shapes, k ≤ unlabeled rows, finite values, max_clusters >= 1: refused before any work."""
    if x.ndim != 2 or labeled.shape != (len(x),):
        raise DalDistError(f"embeddings {x.shape} and labeled {labeled.shape}: expected (N, D) and (N,)")
    if not isinstance(max_clusters, (int, np.integer)) or max_clusters < 1:
        raise DalDistError(f"clusters (--clusters) = {max_clusters}: expected a positive integer")
    check_k(k, int((~labeled).sum()))
    ok = np.isfinite(x).all(axis=1)
    if not ok.all():
        raise DalDistError(f"embeddings: row {int(np.argmin(ok))} has NaN or inf values")


def select_typiclust(scores: str | os.PathLike, k: int, *, labeled_ids: np.ndarray | None = None, seed: int = 0,
                     max_clusters: int = MAX_CLUSTERS) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, typicality): TypiClust over a scores dataset (labeled rows: `--embed-labeled`)."""
    scan = scan_scores(scores, labeled_ids=labeled_ids)
    check_k(k, scan.num_candidates)
    if not isinstance(max_clusters, (int, np.integer)) or max_clusters < 1:
        raise DalDistError(f"clusters (--clusters) = {max_clusters}: expected a positive integer")
    emb = load_embeddings(scan.files, [np.ones(len(i), bool) for i in scan.ids], scan.dim, "float32", scan.ids)
    picks, typ = typiclust(emb, np.concatenate(scan.labeled), k, seed=seed, max_clusters=max_clusters)
    return np.concatenate(scan.ids)[picks], typ
