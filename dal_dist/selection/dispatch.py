"""The one selection entry point: `select(strategy, k, ...)` checks its arguments and runs `select_<strategy>`.

The CLI (`dal-dist select`), the jobs and the driver all call `select`; it returns the selection table
(`id` in pick order, plus `radius` for k-center picks or `score` for top-k), which `write_selection` publishes.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from dal_dist.errors import DalDistError
from dal_dist.pool import read_ids
from dal_dist.selection.coreset import select_kcenter
from dal_dist.selection.hybrid import select_hybrid
from dal_dist.selection.init import select_kcenter_init
from dal_dist.selection.kcenter import STORAGE_DTYPES
from dal_dist.selection.random import select_random
from dal_dist.selection.topk import select_topk

STRATEGIES = ("topk", "kcenter", "hybrid", "random", "kcenter-init")


def _table(ids: np.ndarray, **values: np.ndarray) -> pa.Table:
    """The selection table: int64 `id` in pick order, then float64 value columns (`radius` or `score`)."""
    return pa.table({"id": pa.array(ids, pa.int64()), **{k: pa.array(v, pa.float64()) for k, v in values.items()}})


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_select_arguments(strategy: str, k: int, *, seed: int = 0, workers: int = 2, device: str | None = "auto",
                           storage_dtype: str | None = None) -> None:
    """Every plain argument of `select` in range, whatever the strategy uses, before any file is read."""
    if strategy not in STRATEGIES:
        raise DalDistError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if not _is_int(k) or k <= 0:
        raise DalDistError(f"k = {k}: expected a positive integer")
    if not _is_int(seed) or seed < 0:
        raise DalDistError(f"seed (--seed) = {seed}: expected an integer >= 0")
    if not _is_int(workers) or workers < 1:
        raise DalDistError(f"workers (--workers) = {workers}: expected an integer >= 1")
    if storage_dtype is not None and storage_dtype not in STORAGE_DTYPES:
        raise DalDistError(f"storage_dtype (--storage-dtype) = {storage_dtype!r}: expected one of "
                           f"{', '.join(STORAGE_DTYPES)}")
    if device not in (None, "auto"):
        from dal_dist.device import torch_device

        torch_device(device)  # an unknown name, or cuda without a GPU: refused here, not inside a kernel


def select(strategy: str, k: int, *, scores: str | os.PathLike | None = None,
           pool: str | os.PathLike | None = None, labeled: str | os.PathLike | None = None,
           by: str | None = None, candidates: int | None = None, seed: int = 0,
           distributed: bool = False, workers: int = 2, device: str | None = "auto",
           storage_dtype: str | None = None) -> pa.Table:
    """Run one strategy and return the selection table (`id` in pick order, `radius`/`score` where defined)."""
    check_select_arguments(strategy, k, seed=seed, workers=workers, device=device, storage_dtype=storage_dtype)
    if strategy == "kcenter-init":
        if pool is None:
            raise DalDistError("kcenter-init needs --pool DIR (the raw image pool)")
        ids, radii = select_kcenter_init(pool, k, seed=seed, device=device)
        return _table(ids, radius=radii)
    if scores is None:
        raise DalDistError(f"strategy {strategy} needs --scores DIR (the output of `dal-dist score`)")
    labeled_ids = read_ids(labeled) if labeled is not None else None
    if strategy in ("topk", "hybrid") and not by:
        raise DalDistError(f"strategy {strategy} needs --by SCORE (e.g. bald, entropy, margin)")
    if strategy == "topk":
        ids, vals = select_topk(scores, k, by=by, labeled_ids=labeled_ids)
        return _table(ids, score=vals)
    if strategy == "hybrid":
        if candidates is None:
            raise DalDistError("strategy hybrid needs --candidates M (how many top-scored rows k-center sees)")
        ids, radii = select_hybrid(scores, k, by=by, candidates=candidates, labeled_ids=labeled_ids, seed=seed,
                                   device=device, storage_dtype=storage_dtype)
        return _table(ids, radius=radii)
    if strategy == "random":
        return _table(select_random(scores, k, labeled_ids=labeled_ids, seed=seed))
    ids, radii = select_kcenter(scores, k, labeled_ids=labeled_ids, seed=seed, distributed=distributed,
                                workers=workers, device=device, storage_dtype=storage_dtype)
    return _table(ids, radius=radii)
