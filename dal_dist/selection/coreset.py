"""k-center (core-set) selection over a scores dataset: the embeddings read once, then the exact greedy.

Single node: `kcenter_greedy` on the candidates' embeddings with the labeled rows as existing centers.
With `distributed`: `kcenter_greedy_sharded` on Ray shard actors (same picks, see kcenter_sharded).

Reference: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach", ICLR 2018.
"""

from __future__ import annotations

import os

import numpy as np

from dal_dist.selection.io import load_embeddings, scan_scores
from dal_dist.selection.kcenter import kcenter_greedy
from dal_dist.selection.topk import check_k


def select_kcenter(scores: str | os.PathLike, k: int, *, labeled_ids: np.ndarray | None = None, seed: int = 0,
                   distributed: bool = False, workers: int = 2, device: str | None = "auto",
                   storage_dtype: str | None = None,
                   gpus_per_worker: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, radii): k-center over a scores dataset, single node or on `workers` Ray shard actors."""
    scan = scan_scores(scores, labeled_ids=labeled_ids)
    check_k(k, scan.num_candidates)
    if distributed:
        from dal_dist.selection.kcenter_sharded import kcenter_greedy_sharded  # imports Ray

        return kcenter_greedy_sharded(scan, k, workers=workers, seed=seed, device=device,
                                      storage_dtype=storage_dtype, gpus_per_worker=gpus_per_worker)
    emb = load_embeddings(scan.files, [~m for m in scan.labeled], scan.dim, storage_dtype, scan.ids)
    lab = load_embeddings(scan.files, scan.labeled, scan.dim, storage_dtype, scan.ids) if scan.num_labeled else None
    picks, radii = kcenter_greedy(emb, lab, k, seed=seed, device=device, storage_dtype=storage_dtype)
    return scan.candidate_ids()[picks], radii
