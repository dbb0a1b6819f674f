"""Exact global top-k by a score, merged from per-file top-k so no process sorts the whole table."""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.selection.io import scan_scores


def _order(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rank order: higher score first, ties by lower id (the same order a full sort gives)."""
    return np.lexsort((ids, -scores))


def chunk_topk(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one chunk in rank order, O(n + k log k): partition at the k-th score, sort only the survivors."""
    if len(ids) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth  # every row of the true top-k (ties at kth are resolved by id below)
        ids, scores = ids[keep], scores[keep]
    o = _order(ids, scores)[:k]
    return ids[o], scores[o]


def merge_topk(chunks: Iterable[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Running merge of per-chunk top-k: holds at most 2k rows at a time; equals a full sort's first k."""
    best_ids, best_scores = np.empty(0, np.int64), np.empty(0, np.float64)
    for ids, scores in chunks:
        ids, scores = chunk_topk(np.asarray(ids, np.int64), np.asarray(scores, np.float64), k)
        best_ids, best_scores = chunk_topk(np.concatenate([best_ids, ids]),
                                           np.concatenate([best_scores, scores]), k)
    return best_ids, best_scores


def select_topk(scores: str | os.PathLike, k: int, *, by: str, labeled_ids: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores): the exact top-k unlabeled ids by score column `by` (higher = more worth labeling)."""
    scan = scan_scores(scores, labeled_ids=labeled_ids, score=by, need_embeddings=False)
    check_k(k, scan.num_candidates)
    return merge_topk(((i[~m], s[~m]) for i, m, s in zip(scan.ids, scan.labeled, scan.scores)), k)


def check_k(k: int, n: int, what: str = "candidates") -> None:
    """k must be in 1..n (checked before any work)."""
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise DalDistError(f"k = {k}: expected a positive integer")
    if k > n:
        raise DalDistError(f"k = {k} is larger than the number of {what} ({n})")
