"""Cluster-Margin: the lowest-margin candidates, picked round-robin over clusters of the pool, smallest first.

Reference: Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan, Rostamizadeh & Kumar, "Batch Active
Learning at Scale", NeurIPS 2021 (Algorithm 1; no official code).

* Clustering, once per pool: FAISS k-means of every row's embedding into m fine centroids
  (m = min(N, max(clusters, min(10·clusters, 2048))), trained on a seeded sample of ≤ 64 rows per
  centroid, every row then assigned), then average-linkage HAC (scipy) on the k-means
  centroids cut into `clusters` groups; a row's cluster is its centroid's group. The result is an
  (id, cluster) Parquet file (`cluster_file`) that later rounds reuse, as the paper clusters once.
* Each round: the top-M unlabeled rows by the margin score (`margin` = 1 − (p₁ − p₂): higher = smaller
  margin), M = `candidates` (default 10·k); their clusters sorted by how many candidates they hold
  (ascending, ties by cluster id); then round-robin over that order, one uniformly drawn (seeded)
  candidate per cluster per turn, until k are picked.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError
from dal_dist.selection.io import ScoresScan, load_embeddings, scan_scores
from dal_dist.selection.output import check_selection_out
from dal_dist.selection.topk import check_k, merge_topk
from dal_dist.selection.kmeans import kmeans

MAX_FINE_CENTROIDS = 2048
FINE_SAMPLE_PER_CENTROID = 64
CLUSTERS_META = b"dal_dist.clusters"


def default_clusters(n: int) -> int:
    """√N clusters (at least 2, at most 1,000 and N) when `clusters` is not given."""
    return int(min(n, 1000, max(2, round(np.sqrt(n)))))


def check_clusters(clusters: int, n: int) -> None:
    """`clusters` an integer in 1..n (the rows clustered)."""
    if not isinstance(clusters, (int, np.integer)) or not 1 <= clusters <= n:
        raise DalDistError(f"clusters (--clusters) = {clusters}: expected an integer in 1..{n} (the rows clustered)")


def fine_centroids(n: int, clusters: int) -> int:
    """How many k-means centroids the HAC starts from: 10 per cluster, at most 2,048, at least `clusters`."""
    return int(min(n, max(clusters, min(10 * clusters, MAX_FINE_CENTROIDS))))


def hac_groups(centroids: np.ndarray, clusters: int) -> np.ndarray:
    """The group (0..clusters-1) of each fine centroid: average-linkage HAC cut into `clusters` groups."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(centroids) <= clusters:
        return np.arange(len(centroids))
    return fcluster(linkage(centroids.astype(np.float64), method="average"), t=clusters, criterion="maxclust") - 1


def dense_ids(group: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0..G-1 in order (HAC may leave gaps)."""
    return np.unique(group, return_inverse=True)[1].astype(np.int64)


def hac_clusters(embeddings: np.ndarray, clusters: int, *, seed: int = 0) -> np.ndarray:
    """Cluster id (0..clusters-1) per row: FAISS k-means to fine centroids, then average-linkage HAC on them."""
    x = np.ascontiguousarray(embeddings, np.float32)
    n = len(x)
    check_clusters(clusters, n)
    m = fine_centroids(n, clusters)
    if m < n:
        fine, cent = kmeans(x, m, seed, max_points_per_centroid=FINE_SAMPLE_PER_CENTROID)
    else:
        fine, cent = np.arange(n), x
    return dense_ids(hac_groups(cent, clusters)[fine])


def round_robin(cand_ids: np.ndarray, cand_cluster: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k ids: clusters by candidate count ascending (ties: cluster id), one random candidate each per turn."""
    check_k(k, len(cand_ids))
    rng = np.random.default_rng(seed)
    groups, counts = np.unique(cand_cluster, return_counts=True)
    order = groups[np.lexsort((groups, counts))]
    queues = [list(rng.permutation(cand_ids[cand_cluster == g])) for g in order]
    picks: list[int] = []
    while len(picks) < k:
        for q in queues:
            if q and len(picks) < k:
                picks.append(int(q.pop()))
    return np.array(picks, np.int64)


def read_cluster_file(cluster_file: str | os.PathLike, clusters: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, cluster) of an existing cluster file; refused if it was made for another `clusters`."""
    try:
        with fsx.open_input(cluster_file) as fh:
            t = pq.read_table(fh)
    except (pa.ArrowException, OSError) as e:
        raise DalDistError(f"{fsx.describe(cluster_file)}: not a readable Parquet cluster file ({e}); remove it "
                           "to cluster again") from e
    if t.column_names[:2] != ["id", "cluster"] or not pa.types.is_integer(t.schema.field("cluster").type):
        raise DalDistError(f"{fsx.describe(cluster_file)}: expected columns id, cluster (a cluster file "
                           "written by cluster_margin)")
    made = int((t.schema.metadata or {}).get(CLUSTERS_META, b"0"))
    if clusters is not None and made != clusters:
        raise DalDistError(f"{fsx.describe(cluster_file)}: made with clusters = {made}, not {clusters}; "
                           "remove it to cluster again")
    return t.column("id").to_numpy(), t.column("cluster").to_numpy()


Clusterer = Callable[[ScoresScan, int, int], np.ndarray]  # (scan, clusters, seed) -> cluster of every row


def pool_clusters(scan: ScoresScan, scores: str | os.PathLike, clusters: int | None,
                  cluster_file: str | os.PathLike | None, seed: int, clusterer: Clusterer | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, cluster) of every row: read from `cluster_file` when it exists, else clustered (and saved there),
    in this process or by `clusterer` (the sharded one: `kmeans_sharded.hac_clusters_sharded`)."""
    if cluster_file is not None and fsx.is_file(cluster_file):
        return read_cluster_file(cluster_file, clusters)
    if cluster_file is not None:  # never inside the scores dataset (it would be read as scores) or a pool
        check_selection_out(cluster_file, [scores])
    all_ids = np.concatenate(scan.ids)
    g = clusters if clusters is not None else default_clusters(len(all_ids))
    if clusterer is not None:
        assign = clusterer(scan, g, seed)
    else:
        emb = load_embeddings(scan.files, [np.ones(len(i), bool) for i in scan.ids], scan.dim, "float32", scan.ids)
        assign = hac_clusters(emb, g, seed=seed)
    if cluster_file is not None:
        t = pa.table({"id": pa.array(all_ids, pa.int64()), "cluster": pa.array(assign, pa.int64())})
        fsx.write_table_atomic(cluster_file, t.replace_schema_metadata({CLUSTERS_META: str(g).encode()}))
    return all_ids, assign


def select_cluster_margin(scores: str | os.PathLike, k: int, *, by: str = "margin", candidates: int | None = None,
                          clusters: int | None = None, cluster_file: str | os.PathLike | None = None,
                          labeled_ids: np.ndarray | None = None, seed: int = 0, clusterer: Clusterer | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, their cluster): Cluster-Margin over the unlabeled rows of a scores dataset (the
    clustering by `clusterer` when given; the margin top-M streams either way)."""
    scan = scan_scores(scores, labeled_ids=labeled_ids, score=by)
    check_k(k, scan.num_candidates)
    m = min(10 * k, scan.num_candidates) if candidates is None else candidates
    check_k(m, scan.num_candidates, "candidates in the scores dataset (--candidates)")
    if k > m:
        raise DalDistError(f"k = {k} is larger than --candidates = {m}")
    if clusters is not None and (not isinstance(clusters, (int, np.integer)) or clusters < 1):
        raise DalDistError(f"clusters (--clusters) = {clusters}: expected a positive integer")
    top, _ = merge_topk(((i[~lab], s[~lab]) for i, lab, s in zip(scan.ids, scan.labeled, scan.scores)), m)
    ids, assign = pool_clusters(scan, scores, clusters, cluster_file, seed, clusterer)
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], top)
    found = (pos < len(ids)) & (ids[order][np.minimum(pos, len(ids) - 1)] == top)
    if not found.all():
        raise DalDistError(f"{fsx.describe(cluster_file)}: no cluster for id {top[np.argmin(found)]} (made for "
                           "another pool?); remove it to cluster again")
    cand_cluster = assign[order[pos]]
    picks = round_robin(top, cand_cluster, k, seed)
    return picks, assign[order[np.searchsorted(ids[order], picks)]]
