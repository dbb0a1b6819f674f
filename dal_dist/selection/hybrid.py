"""Hybrid batch selection: top-M by an uncertainty score, then k-center down to k for diversity.

References: Zhdanov, "Diverse mini-batch Active Learning", 2019 (pre-filter by informativeness, then
pick a diverse subset); Ren et al., "A Survey of Deep Active Learning", 2021 (batch-mode DAL).
"""

from __future__ import annotations

import os

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.selection.io import load_embeddings, scan_scores
from dal_dist.selection.kcenter import kcenter_greedy
from dal_dist.selection.topk import check_k, merge_topk


def select_hybrid(scores: str | os.PathLike, k: int, *, by: str, candidates: int,
                  labeled_ids: np.ndarray | None = None, seed: int = 0, device: str | None = "auto",
                  storage_dtype: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, radii): k-center over the top-`candidates` unlabeled rows by `by`; ids ⊂ top-M."""
    scan = scan_scores(scores, labeled_ids=labeled_ids, score=by)
    check_k(candidates, scan.num_candidates, "candidates in the scores dataset (--candidates)")
    if k > candidates:
        raise DalDistError(f"k = {k} is larger than --candidates = {candidates}")
    check_k(k, candidates)
    top_ids, _ = merge_topk(((i[~m], s[~m]) for i, m, s in zip(scan.ids, scan.labeled, scan.scores)),
                            candidates)
    keep = [~m & np.isin(i, top_ids) for i, m in zip(scan.ids, scan.labeled)]
    emb = load_embeddings(scan.files, keep, scan.dim, storage_dtype, scan.ids)
    lab = load_embeddings(scan.files, scan.labeled, scan.dim, storage_dtype, scan.ids) if scan.num_labeled else None
    cand_ids = np.concatenate([i[m] for i, m in zip(scan.ids, keep)])
    picks, radii = kcenter_greedy(emb, lab, k, seed=seed, device=device, storage_dtype=storage_dtype)
    return cand_ids[picks], radii
