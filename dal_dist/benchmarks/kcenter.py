"""k-center benchmark: dal-dist's exact greedy vs the reference as the peers write it, one process, one JSON line.

The reference follows google/active-learning's `kcenter_greedy`: scikit-learn `pairwise_distances`
against the labeled set (an N×L matrix) then, per pick, `pairwise_distances` to the new center and a
running `np.minimum` + argmax.  It is timed over `ref_picks` picks (a few seconds each at N=1M).
`read_gb_s` is this machine's memory read bandwidth measured in the same run (best of a threaded
reduction over the same bytes); `bound_s_per_pick` = embedding bytes read per pick ÷ that bandwidth.
`peak_rss_bytes` is taken before the reference runs, so it is dal-dist's own peak.
"""

from __future__ import annotations

import json
import resource
import time
from typing import Any

import numpy as np
import torch

from dal_dist.device import device_name, torch_device
from dal_dist.selection.kcenter import MinDistances, as_storage, min_distances


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gaussian(n: int, dim: int, dtype: str, seed: int, block: int = 65536) -> np.ndarray:
    """Seeded float32 Gaussian embeddings stored in `dtype`, generated in blocks (no float64/N×d temporaries)."""
    rng = np.random.default_rng(seed)
    probe = as_storage(np.zeros((1, dim), np.float32), dtype)
    x = np.empty((n, dim), dtype=probe.dtype)
    buf = np.empty((block, dim), np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        rng.standard_normal(out=buf[:e - s], dtype=np.float32)
        x[s:e] = buf[:e - s] if dtype == "float32" else as_storage(buf[:e - s], dtype)
    return x


def read_bandwidth(x: np.ndarray, repeats: int = 5) -> float:
    """Bytes/s of the fastest threaded full read of `x` we know (torch reductions over its bytes)."""
    raw = x.reshape(-1).view(np.int32) if x.nbytes % 4 == 0 else x.reshape(-1).view(np.uint8)
    raw_dtype = torch.int32 if raw.dtype == np.int32 else torch.uint8
    readers = [lambda: torch.from_numpy(raw).sum(dtype=raw_dtype)]  # same-width sum: no upcast copy
    if x.dtype == np.float32:
        readers.append(lambda: torch.from_numpy(x).sum())
    best = float("inf")
    for read in readers:
        read()
        for _ in range(repeats):
            t = time.perf_counter()
            read()
            best = min(best, time.perf_counter() - t)
    return x.nbytes / best


def device_read_bandwidth(x: np.ndarray, device: Any, repeats: int = 5) -> float:
    """Bytes/s of a full read of `x` once it is on a GPU (a same-width reduction over its bytes)."""
    raw = torch.from_numpy(x.reshape(-1).view(np.int32) if x.nbytes % 4 == 0 else x.reshape(-1).view(np.uint8))
    on = raw.to(device)
    best = float("inf")
    for _ in range(repeats + 1):
        torch.cuda.synchronize()
        t = time.perf_counter()
        on.sum(dtype=on.dtype)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    del on
    return x.nbytes / best


def run_dal_dist(x: np.ndarray, lab: np.ndarray, k: int, device: str = "cpu", loop: str = "auto") -> dict[str, Any]:
    """Time dal-dist's exact greedy: init (norms + FAISS or device kNN + exact nearest), then k picks."""
    sync = torch.cuda.synchronize if torch_device(device).type == "cuda" else (lambda: None)
    t = time.perf_counter()
    state = min_distances(x, lab, device=device, loop=loop)
    sync()
    init_s = time.perf_counter() - t
    picks = []
    t = time.perf_counter()
    for _ in range(k):
        _, i = state.farthest()
        state.pick(i)
        picks.append(i)
    sync()
    return {"init_s": init_s, "s_per_pick": (time.perf_counter() - t) / k, "picks": picks,
            "loop": type(state).__name__}


def run_reference(x: np.ndarray, lab: np.ndarray, picks: int) -> dict[str, Any]:
    """google/active-learning-style k-center greedy with scikit-learn pairwise_distances."""
    from sklearn.metrics import pairwise_distances

    t = time.perf_counter()
    min_d = np.min(pairwise_distances(x, lab, metric="euclidean"), axis=1).reshape(-1, 1)
    init_s = time.perf_counter() - t
    chosen = []
    t = time.perf_counter()
    for _ in range(picks):
        ind = int(np.argmax(min_d))
        chosen.append(ind)
        dist = pairwise_distances(x, x[[ind]], metric="euclidean")
        min_d = np.minimum(min_d, dist)
    return {"ref_init_s": init_s, "ref_s_per_pick": (time.perf_counter() - t) / picks, "ref_picks": chosen}


def main(n: int = 1_000_000, dim: int = 128, labeled: int = 1000, k: int = 200, dtype: str = "float32",
         ref_picks: int = 5, seed: int = 0, device: str = "cpu", loop: str = "auto") -> dict[str, Any]:
    """Run both implementations on the same seeded data and print one JSON line."""
    import faiss  # noqa: F401  (loaded before the baseline RSS so library code is not counted as data)
    import sklearn.metrics  # noqa: F401

    rss0 = _rss_peak()
    x = gaussian(n, dim, dtype, seed)
    lab = gaussian(labeled, dim, dtype, seed + 1)
    dev = torch_device(device)
    read_gb_s = (device_read_bandwidth(x, dev) if dev.type == "cuda" else read_bandwidth(x)) / 1e9
    ours = run_dal_dist(x, lab, k, str(dev), loop)
    peak = _rss_peak()
    bound = x.nbytes / (read_gb_s * 1e9)
    out: dict[str, Any] = {
        "bench": "kcenter", "device": dev.type, "device_name": device_name(dev), "loop": ours["loop"],
        "n": n, "dim": dim, "labeled": labeled, "k": k, "dtype": dtype, "threads": torch.get_num_threads(),
        "init_s": round(ours["init_s"], 4), "s_per_pick": round(ours["s_per_pick"], 5),
        "read_gb_s": round(read_gb_s, 2), "bytes_per_pick": x.nbytes,
        "bound_s_per_pick": round(bound, 5), "x_bound": round(ours["s_per_pick"] / bound, 3),
        "peak_rss_bytes": peak, "rss_before_data_bytes": rss0, "embeddings_bytes": x.nbytes + lab.nbytes,
        "peak_over_embeddings": round((peak - rss0) / (x.nbytes + lab.nbytes), 3),
    }
    if ref_picks > 0:
        ref = run_reference(x.astype(np.float32, copy=False), lab.astype(np.float32, copy=False), ref_picks)
        out.update({
            "ref_init_s": round(ref["ref_init_s"], 4), "ref_s_per_pick": round(ref["ref_s_per_pick"], 5),
            "ref_picks_timed": ref_picks, "speedup_per_pick": round(ref["ref_s_per_pick"] / ours["s_per_pick"], 2),
            "speedup_init": round(ref["ref_init_s"] / ours["init_s"], 2),
            "ref_picks_agree": ref["ref_picks"] == ours["picks"][:ref_picks],
        })
    print(json.dumps(out), flush=True)
    return out


def main_sharded(n: int = 200_000, dim: int = 128, labeled: int = 1000, k: int = 100, workers: int = 2,
                 files: int = 8, seed: int = 0) -> dict[str, Any]:
    """Distributed vs single-node on a temporary scores dataset: same picks? per-pick round-trip overhead."""
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from dal_dist.selection import select_kcenter
    from dal_dist.selection.io import scan_scores
    from dal_dist.selection.kcenter_sharded import kcenter_greedy_sharded

    x = gaussian(n + labeled, dim, "float32", seed)
    is_lab = np.zeros(n + labeled, bool)
    is_lab[np.random.default_rng(seed).choice(n + labeled, labeled, replace=False)] = True
    with tempfile.TemporaryDirectory() as tmp:
        for f, part in enumerate(np.array_split(np.arange(n + labeled), files)):
            emb = pa.FixedSizeListArray.from_arrays(pa.array(x[part].reshape(-1)), dim)
            pq.write_table(pa.table({"id": pa.array(part, pa.int64()), "embedding": emb,
                                     "labeled": pa.array(is_lab[part])}), Path(tmp) / f"part-{f:05d}.parquet")
        del x
        t = time.perf_counter()
        single_ids, _ = select_kcenter(tmp, k, seed=seed, device="cpu")
        single_s = time.perf_counter() - t
        if not ray.is_initialized():
            ray.init(num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False)
        stats: dict[str, Any] = {}
        dist_ids, _ = kcenter_greedy_sharded(scan_scores(tmp), k, workers=workers, seed=seed, device="cpu",
                                             actor_cpus=1, stats=stats)
    out = {"bench": "kcenter-sharded", "n": n, "dim": dim, "labeled": labeled, "k": k,
           "single_node_total_s": round(single_s, 3), "same_picks": bool(np.array_equal(single_ids, dist_ids)),
           **{key: round(v, 6) if isinstance(v, float) else v for key, v in stats.items()}}
    print(json.dumps(out), flush=True)
    return out
