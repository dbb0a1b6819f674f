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


def near_tie_points(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(3,000 candidates, 100 labeled) where labeled points come in pairs 1e-3 apart: float32 nearest-center
    answers are unreliable there, so only an exact (float64) check gives the brute-force picks."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((50, 16)).astype(np.float32) * 100
    lab = np.concatenate([base, base + np.float32(1e-3)])
    x = base[rng.integers(0, 50, 3000)] + rng.standard_normal((3000, 16)).astype(np.float32) * 1e-2
    return x, lab


def loop_picks(state, k: int) -> list[int]:
    """k greedy picks from a min-distances state (`farthest`, then `pick`)."""
    picks = []
    for _ in range(k):
        _, i = state.farthest()
        picks.append(i)
        state.pick(i)
    return picks


def softmax_rows(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    """n random float32 probability rows over c classes (logits N(0, 2²))."""
    z = rng.standard_normal((n, c)) * 2
    p = np.exp(z - z.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def kill_actor(actor, timeout_s: float = 30.0) -> None:
    """`ray.kill` and wait until the actor is gone: the kill is asynchronous, and a call sent right after it
    may still run on the old actor (a test of what follows a death would then test nothing)."""
    import time

    import ray

    ray.kill(actor)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=timeout_s)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError(f"actor {actor} still answers {timeout_s} s after ray.kill")
