"""k-means on Ray shard actors, and the two strategies built on it: TypiClust and Cluster-Margin's clustering.

Each shard actor holds the embeddings of its files (every row, labeled ones too: both methods cluster
the whole pool). The driver draws the training sample's global row numbers exactly as one process
would (`kmeans.kmeans_sample`), gathers those rows from the shards, trains FAISS k-means on them, and
sends the centroids back; every shard assigns its own rows (nearest centroid, per row). So the
centroids are the single-node ones and the assignment differs at most where a row is equidistant to
two centroids within float32 rounding of the BLAS product.

* TypiClust (`typiclust_sharded`): the shards return per-cluster (size, labeled) counts; the driver
  orders the visits (`typiclust.pick_clusters`), then for each visited cluster gathers its unlabeled
  rows from the shards and has one shard actor (in turn) make that cluster's picks
  (`typiclust.typical_picks`; the rows travel shard to shard through Ray's object store), then
  interleaves them: the single-node picks. The driver holds row numbers, never embeddings.
* Cluster-Margin (`hac_clusters_sharded`): the shards return each row's fine cluster; the HAC on the
  fine centroids runs in the driver (≤ 2,048 of them).

A dead shard is rebuilt from its files and replayed (`selection.shards`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import ray

from dal_dist.errors import DalDistError
from dal_dist.ray_connect import connect
from dal_dist.selection.cluster_margin import (FINE_SAMPLE_PER_CENTROID, check_clusters, dense_ids, fine_centroids,
                                               hac_clusters, hac_groups)
from dal_dist.selection.io import ScoresScan, load_embeddings, scan_scores
from dal_dist.selection.kmeans import POINTS_PER_CENTROID, assign, kmeans_sample, train_kmeans
from dal_dist.selection.shards import ShardGroup, plan_shards, shard_files
from dal_dist.selection.topk import check_k
from dal_dist.selection.typiclust import (MAX_CLUSTERS, check_max_clusters, interleave, pick_clusters,
                                          typical_picks, typiclust_clusters)

IN_FLIGHT_PER_SHARD = 4  # TypiClust clusters queued on each shard actor ahead of the one being waited for
STAGE_CLUSTERS = 64  # clusters each shard stages per call (bounds the staged copies held in the object store)


class EmbeddingShard:
    """Every row's embedding of one shard's files, and its cluster once assigned (the Ray actor body)."""

    def __init__(self, files: list[str], keep: list[np.ndarray], labeled: list[np.ndarray], ids: list[np.ndarray],
                 dim: int) -> None:
        self.error: DalDistError | None = None
        self.x = np.empty((0, dim), np.float32)
        try:  # bad input is kept and raised by the first call: a failed constructor loses the message
            self.x = load_embeddings(files, [np.ones(len(i), bool) for i in ids], dim, "float32", ids)
        except DalDistError as e:
            self.error = e
        self.labeled = np.concatenate(labeled) if labeled else np.zeros(0, bool)
        self.labels: np.ndarray | None = None
        self.members: list[np.ndarray] = []

    def rows(self, local: np.ndarray) -> np.ndarray:
        """Embeddings of local rows (the k-means training sample's share of this shard)."""
        if self.error is not None:
            raise self.error
        return self.x[local]

    def assign(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Assign every row to its nearest centroid: (rows per cluster, labeled rows per cluster)."""
        if self.error is not None:
            raise self.error
        k = len(centroids)
        self.labels = assign(self.x, centroids) if len(self.x) else np.zeros(0, np.int64)
        sizes = np.bincount(self.labels, minlength=k)
        self.members = np.split(np.argsort(self.labels, kind="stable"), np.cumsum(sizes)[:-1])
        return sizes, np.bincount(self.labels[self.labeled], minlength=k)

    def cluster_labels(self) -> np.ndarray:
        """Every row's cluster, in row order."""
        return self.labels

    @staticmethod
    def typical(picks: int, *parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One cluster's TypiClust picks over its unlabeled rows (gathered from every shard, in global order)."""
        return typical_picks(np.concatenate(parts), picks)

    def unlabeled_rows(self, c: int) -> np.ndarray:
        """Local row numbers of cluster c's unlabeled rows, in row order."""
        m = self.members[c]
        return m[~self.labeled[m]]

    def unlabeled_x(self, c: int) -> np.ndarray:
        """Embeddings of cluster c's unlabeled rows, in row order."""
        return self.x[self.unlabeled_rows(c)]

    def stage(self, clusters: list[int]) -> list[tuple[np.ndarray, Any]]:
        """For each cluster: (local row numbers of its unlabeled rows, an object-store ref to their embeddings),
        one call for many clusters (a ref is lost with this actor: the driver then refetches through the group)."""
        return [(self.unlabeled_rows(c), ray.put(self.unlabeled_x(c))) for c in clusters]


def shard_group(scan: ScoresScan, workers: int, actor_cpus: float) -> tuple[ShardGroup, list[int]]:
    """(EmbeddingShard actors over contiguous file ranges, the first global row of each)."""
    shards = plan_shards(scan, workers)
    counts = [sum(len(scan.ids[f]) for f in files) for files in shards]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
    group = ShardGroup(EmbeddingShard, lambda j: {**shard_files(scan, shards[j]), "dim": scan.dim}, len(shards),
                       actor_cpus=actor_cpus)
    return group, starts


def sharded_centroids(group: ShardGroup, starts: list[int], n: int, clusters: int, seed: int,
                      max_points_per_centroid: int) -> np.ndarray:
    """The single-node k-means centroids: its training sample's rows gathered from the shards, trained here."""
    sample = kmeans_sample(n, clusters, seed, max_points_per_centroid)
    bounds = list(starts) + [n]
    per = [(sample[(sample >= a) & (sample < b)] - a,) for a, b in zip(bounds[:-1], bounds[1:])]
    return train_kmeans(np.concatenate(group.call("rows", per_shard=per)), clusters, seed)


def _collect(group: ShardGroup, pending: list, per_cluster: dict) -> None:
    """Wait for the oldest cluster's picks and file them as global rows."""
    c, p, rows, call = pending.pop(0)
    try:
        picked, typ = call.result()
    except ray.exceptions.RayError:  # its rows went with a lost shard: fetch them again (rebuilding it) and redo
        picked, typ = group.call_one(call.j, "typical", p, *group.call("unlabeled_x", c))
    per_cluster[c] = (rows[picked], typ)


def typiclust_sharded(scan: ScoresScan, k: int, *, workers: int = 2, seed: int = 0,
                      max_clusters: int = MAX_CLUSTERS, actor_cpus: float = 1) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, typicality): `typiclust` over a scanned scores dataset on `workers` Ray actors."""
    check_k(k, scan.num_candidates)
    check_max_clusters(max_clusters)
    connect()
    n = int(sum(len(i) for i in scan.ids))
    clusters = typiclust_clusters(scan.num_labeled, k, max_clusters, n)
    group, starts = shard_group(scan, workers, actor_cpus)
    per_cluster: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    try:
        out = group.call("assign", sharded_centroids(group, starts, n, clusters, seed, POINTS_PER_CENTROID),
                         mutates=True)
        seq = pick_clusters(np.sum([o[0] for o in out], axis=0), np.sum([o[1] for o in out], axis=0), k)
        pending: list = []  # (cluster, picks, its global rows, the call making its picks), oldest first
        visited, counts = (a.tolist() for a in np.unique(seq, return_counts=True))
        for lo in range(0, len(visited), STAGE_CLUSTERS):
            chunk = visited[lo:lo + STAGE_CLUSTERS]
            # Each shard stages the chunk's clusters in one call; the shard actors (idle now) make the picks, one
            # cluster each in turn, its rows going shard to shard through the object store, not through here.
            staged = group.call("stage", chunk)
            for i, (c, p) in enumerate(zip(chunk, counts[lo:lo + STAGE_CLUSTERS])):
                rows = np.concatenate([starts[j] + staged[j][i][0] for j in range(len(group))])
                call = group.submit((lo + i) % len(group), "typical", p, *[staged[j][i][1] for j in range(len(group))])
                pending.append((c, p, rows, call))
                while len(pending) >= IN_FLIGHT_PER_SHARD * len(group):
                    _collect(group, pending, per_cluster)
        while pending:
            _collect(group, pending, per_cluster)
    finally:
        group.kill()
    picks, typ = interleave(seq, per_cluster)
    return np.concatenate(scan.ids)[picks], typ


def hac_clusters_sharded(scan: ScoresScan, clusters: int, *, workers: int = 2, seed: int = 0,
                         actor_cpus: float = 1) -> np.ndarray:
    """`cluster_margin.hac_clusters` of every row (dataset order) with the k-means on `workers` Ray actors."""
    n = int(sum(len(i) for i in scan.ids))
    check_clusters(clusters, n)
    m = fine_centroids(n, clusters)
    if m >= n:  # as many centroids as rows: nothing to distribute
        x = load_embeddings(scan.files, [np.ones(len(i), bool) for i in scan.ids], scan.dim, "float32", scan.ids)
        return hac_clusters(x, clusters, seed=seed)
    connect()
    group, starts = shard_group(scan, workers, actor_cpus)
    try:
        centroids = sharded_centroids(group, starts, n, m, seed, FINE_SAMPLE_PER_CENTROID)
        group.call("assign", centroids, mutates=True)
        fine = np.concatenate(group.call("cluster_labels"))
    finally:
        group.kill()
    return dense_ids(hac_groups(centroids, clusters)[fine])


def select_typiclust_sharded(scores: str | os.PathLike, k: int, *, labeled_ids: np.ndarray | None = None,
                             seed: int = 0, max_clusters: int = MAX_CLUSTERS, workers: int = 2
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, typicality): `select_typiclust` with the rows on `workers` Ray shard actors."""
    scan = scan_scores(scores, labeled_ids=labeled_ids)
    return typiclust_sharded(scan, k, workers=workers, seed=seed, max_clusters=max_clusters)


def sharded_clusterer(workers: int):
    """Cluster-Margin's clustering step on `workers` Ray shard actors (`cluster_margin.pool_clusters`'s clusterer)."""
    return lambda scan, clusters, seed: hac_clusters_sharded(scan, clusters, workers=workers, seed=seed)
