"""k-means for TypiClust and Cluster-Margin: FAISS k-means trained on a seeded row sample, every row assigned.

The training sample is drawn here (numpy, seeded, sorted row numbers), not inside FAISS, so a
sharded pool can hand the driver exactly the rows a single process would have trained on: the same
centroids either way, and the assignment (nearest centroid, FAISS flat L2) is per row.
"""

from __future__ import annotations

import numpy as np

NITER = 20
POINTS_PER_CENTROID = 256  # FAISS's default training sample per centroid


def kmeans_sample(n: int, clusters: int, seed: int = 0,
                  max_points_per_centroid: int = POINTS_PER_CENTROID) -> np.ndarray:
    """Sorted row numbers (of n) to train `clusters` centroids on: all rows, or a seeded sample of
    clusters·max_points_per_centroid of them."""
    m = int(clusters) * int(max_points_per_centroid)
    if n <= m:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False)).astype(np.int64)


def train_kmeans(sample: np.ndarray, clusters: int, seed: int = 0, niter: int = NITER) -> np.ndarray:
    """The (clusters, D) float32 centroids of FAISS k-means on the sample rows (seeded, no further sampling)."""
    import faiss

    x = np.ascontiguousarray(sample, np.float32)
    km = faiss.Kmeans(x.shape[1], int(clusters), niter=niter, seed=int(seed) % (2**31), verbose=False,
                      max_points_per_centroid=max(1, -(-len(x) // int(clusters))))
    km.train(x)
    return np.asarray(km.centroids, np.float32)


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid (squared L2, FAISS flat index, ties to the lower id) of every row, int64."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    _, a = index.search(np.ascontiguousarray(x, np.float32), 1)
    return a[:, 0].astype(np.int64)


def kmeans(x: np.ndarray, clusters: int, seed: int = 0, niter: int = NITER,
           max_points_per_centroid: int = POINTS_PER_CENTROID) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id of every row, centroids): trained on `kmeans_sample`'s rows, then every row assigned."""
    x = np.asarray(x)
    centroids = train_kmeans(x[kmeans_sample(len(x), clusters, seed, max_points_per_centroid)], clusters, seed,
                             niter)
    return assign(x, centroids), centroids
