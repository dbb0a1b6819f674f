"""Helpers for the selection tests: tiny scores datasets (the `dal-dist score` contract), a float64 brute force."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def brute_kcenter(x: np.ndarray, labeled: np.ndarray | None, k: int, seed: int = 0):
    """Float64 brute force of the greedy, written independently of the library (ties -> lowest row)."""
    x = x.astype(np.float64)
    m = np.full(len(x), np.inf)
    if labeled is not None:
        for c in labeled.astype(np.float64):
            m = np.minimum(m, ((x - c) ** 2).sum(1))
    picks, radii = [], []
    for t in range(k):
        if t == 0 and labeled is None:
            i, r = int(np.random.default_rng(seed).integers(len(x))), math.inf
        else:
            i = int(np.argmax(m))
            r = math.sqrt(m[i])
        picks.append(i)
        radii.append(r)
        m = np.minimum(m, ((x - x[i]) ** 2).sum(1))
        m[i] = -np.inf
    return np.array(picks), np.array(radii)


def write_scores(directory: Path, ids: np.ndarray, emb: np.ndarray, *, files: int = 2,
                 labeled: np.ndarray | None = None, scores: dict[str, np.ndarray] | None = None,
                 row_group_size: int = 64, vectors: dict[str, np.ndarray] | None = None) -> Path:
    """Write a scores dataset split into `files` Parquet files (ids in the given order); `vectors`: more
    fixed-size float32 list columns (BADGE's `probs`)."""
    directory.mkdir(parents=True, exist_ok=True)
    value_type = pa.float16() if emb.dtype == np.float16 else pa.float32()
    for f, part in enumerate(np.array_split(np.arange(len(ids)), files)):
        e = emb[part]
        cols = {"id": pa.array(ids[part], pa.int64()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(e.reshape(-1), value_type), e.shape[1])}
        for name, s in (scores or {}).items():
            cols[name] = pa.array(s[part], pa.float32())
        for name, v in (vectors or {}).items():
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(v[part].reshape(-1), pa.float32()), v.shape[1])
        if labeled is not None:
            cols["labeled"] = pa.array(labeled[part])
        pq.write_table(pa.table(cols), directory / f"part-{f:05d}.parquet", row_group_size=row_group_size)
    return directory
