"""Seeded uniform random selection: the baseline every strategy is compared against."""

from __future__ import annotations

import os

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.selection.io import scan_scores
from dal_dist.selection.topk import check_k


def random_ids(candidate_ids: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k distinct ids drawn uniformly: exactly `default_rng(seed).choice(candidate_ids, size=k, replace=False)`."""
    ids = np.asarray(candidate_ids)
    if ids.ndim != 1:
        raise DalDistError(f"candidate_ids: expected a 1-D array of ids, got shape {ids.shape}")
    check_k(k, len(ids))
    return np.random.default_rng(seed).choice(ids, size=k, replace=False)


def select_random(scores: str | os.PathLike, k: int, *, labeled_ids: np.ndarray | None = None,
                  seed: int = 0) -> np.ndarray:
    """k ids drawn uniformly (seeded) from the unlabeled rows of a scores dataset, in dataset order before the draw."""
    scan = scan_scores(scores, labeled_ids=labeled_ids, need_embeddings=False)
    check_k(k, scan.num_candidates)
    return random_ids(scan.candidate_ids(), k, seed)
