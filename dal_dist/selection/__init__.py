"""Selection: which unlabeled ids to label next (top-k, k-center, hybrid, random, k-center init).

`select` is the one entry point the CLI and jobs call; each strategy lives in its own module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from dal_dist.errors import DalDistError

STRATEGIES = ("topk", "kcenter", "hybrid", "random", "kcenter-init")


def select(strategy: str, k: int, *, scores: str | os.PathLike | None = None,
           pool: str | os.PathLike | None = None, labeled: str | os.PathLike | None = None,
           by: str | None = None, candidates: int | None = None, seed: int = 0,
           distributed: bool = False, workers: int = 2, device: str | None = "auto",
           storage_dtype: str | None = None) -> pa.Table:
    """Run one strategy and return the selection table (`id` in pick order, `radius`/`score` where defined)."""
    if strategy not in STRATEGIES:
        raise DalDistError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise DalDistError(f"k = {k}: expected a positive integer")
    if strategy == "kcenter-init":
        if pool is None:
            raise DalDistError("kcenter-init needs --pool DIR (the raw image pool)")
        from dal_dist.selection.init import kcenter_init

        ids, radii = kcenter_init(pool, k, seed=seed, device=device)
        return pa.table({"id": pa.array(ids, pa.int64()), "radius": pa.array(radii, pa.float64())})
    if scores is None:
        raise DalDistError(f"strategy {strategy} needs --scores DIR (the output of `dal-dist score`)")
    labeled_ids = None
    if labeled is not None:
        from dal_dist.idfile import read_ids

        labeled_ids = read_ids(labeled)
    if strategy in ("topk", "hybrid") and not by:
        raise DalDistError(f"strategy {strategy} needs --by SCORE (e.g. bald, entropy, margin)")
    if strategy == "topk":
        from dal_dist.selection.topk import topk_scores

        ids, vals = topk_scores(scores, by, k, labeled_ids)
        return pa.table({"id": pa.array(ids, pa.int64()), "score": pa.array(vals, pa.float64())})
    if strategy == "hybrid":
        if candidates is None:
            raise DalDistError("strategy hybrid needs --candidates M (how many top-scored rows k-center sees)")
        from dal_dist.selection.hybrid import hybrid_select

        ids, radii = hybrid_select(scores, by, candidates, k, labeled_ids=labeled_ids, seed=seed,
                                   device=device, storage_dtype=storage_dtype)
        return pa.table({"id": pa.array(ids, pa.int64()), "radius": pa.array(radii, pa.float64())})
    if strategy == "random":
        from dal_dist.selection.io import scan_scores
        from dal_dist.selection.random import random_selection
        from dal_dist.selection.topk import check_k

        scan = scan_scores(scores, labeled_ids=labeled_ids, need_embeddings=False)
        check_k(k, scan.num_candidates)
        return pa.table({"id": pa.array(random_selection(scan.candidate_ids(), k, seed), pa.int64())})
    ids, radii = kcenter_select(scores, k, labeled_ids=labeled_ids, seed=seed, distributed=distributed,
                                workers=workers, device=device, storage_dtype=storage_dtype)
    return pa.table({"id": pa.array(ids, pa.int64()), "radius": pa.array(radii, pa.float64())})


def kcenter_select(scores: str | os.PathLike, k: int, *, labeled_ids: np.ndarray | None = None, seed: int = 0,
                   distributed: bool = False, workers: int = 2, device: str | None = "auto",
                   storage_dtype: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k-center over a scores dataset: single node by default, Ray shard actors with `distributed`."""
    from dal_dist.selection.io import load_embeddings, scan_scores
    from dal_dist.selection.kcenter import kcenter_greedy
    from dal_dist.selection.topk import check_k

    scan = scan_scores(scores, labeled_ids=labeled_ids)
    check_k(k, scan.num_candidates)
    if distributed:
        from dal_dist.selection.kcenter_sharded import sharded_kcenter

        return sharded_kcenter(scan, k, workers=workers, seed=seed, device=device, storage_dtype=storage_dtype)
    emb = load_embeddings(scan.files, [~m for m in scan.labeled], scan.dim, storage_dtype, scan.ids)
    lab = load_embeddings(scan.files, scan.labeled, scan.dim, storage_dtype, scan.ids) if scan.num_labeled else None
    picks, radii = kcenter_greedy(emb, lab, k, seed=seed, device=device, storage_dtype=storage_dtype)
    return scan.candidate_ids()[picks], radii


def write_selection(table: pa.Table, out: str | os.PathLike) -> str | Path:
    """Write the selection Parquet atomically (readers never see half a file); `out` may be a URI (dal_dist.fs)."""
    from dal_dist import fs as fsx

    fsx.write_table_atomic(out, table)
    return out if fsx.is_uri(out) else Path(out)
