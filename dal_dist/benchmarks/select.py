"""Selection benchmark: per strategy, the seconds and peak RSS of one batch pick at N rows, one JSON line each.

Each strategy runs in its own child process (`python -m dal_dist.benchmarks.select --one NAME ...`), so
its `peak_rss_bytes` is its own (the seeded synthetic inputs included: `input_bytes` says how much of it
they are). Inputs: float32 Gaussian embeddings (N×dim), a softmax over `classes` logits, and BALD-like
scores in [0, 1); the array-level function of each strategy is timed, not Parquet I/O (nor, for batchbald,
the model re-run on its candidates: its T = 20 probabilities per candidate are synthetic).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

BENCH_STRATEGIES = ("topk", "powerbald", "softmax", "softrank", "badge", "typiclust", "density", "cluster_margin",
                    "batchbald")
BATCHBALD_T = 20  # MC samples of the synthetic (candidates, T, C) probabilities


def _inputs(n: int, dim: int, classes: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    logits = rng.standard_normal((n, classes), dtype=np.float32) * 3
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return {"ids": np.arange(n, dtype=np.int64), "scores": rng.random(n), "embeddings": emb, "probs": probs}


def _runner(name: str) -> Callable[[dict[str, np.ndarray], int, int], Any]:
    from dal_dist.selection.badge import badge_kmeanspp
    from dal_dist.selection.batchbald import batchbald
    from dal_dist.selection.cluster_margin import default_clusters, hac_clusters, round_robin
    from dal_dist.selection.density import information_density
    from dal_dist.selection.stochastic import stochastic_batch
    from dal_dist.selection.topk import chunk_topk
    from dal_dist.selection.typiclust import typiclust

    modes = {"powerbald": "power", "softmax": "softmax", "softrank": "softrank"}
    if name == "topk":
        return lambda x, k, seed: chunk_topk(x["ids"], x["scores"], k)
    if name in modes:
        return lambda x, k, seed: stochastic_batch(x["ids"], x["scores"], k, mode=modes[name], beta=1.0, seed=seed)
    if name == "typiclust":  # nothing labeled: min(k, 500) clusters
        return lambda x, k, seed: typiclust(x["embeddings"], np.zeros(len(x["ids"]), bool), k, seed=seed)
    if name == "density":
        return lambda x, k, seed: information_density(x["ids"], x["scores"], x["embeddings"], k)
    if name == "cluster_margin":  # the clustering (once per pool in a run) is included: √N clusters
        def cluster_margin(x, k, seed):
            assign = hac_clusters(x["embeddings"], default_clusters(len(x["ids"])), seed=seed)
            top = chunk_topk(x["ids"], x["scores"], min(10 * k, len(x["ids"])))[0]
            return round_robin(top, assign[top], k, seed)  # ids are 0..N-1 here
        return cluster_margin
    if name == "batchbald":  # on the top 10·k by score; the model re-run is not timed (synthetic T×C probs)
        def batchbald_top(x, k, seed):
            top = chunk_topk(x["ids"], x["scores"], min(10 * k, len(x["ids"])))[0]
            rng = np.random.default_rng(seed)
            logits = np.log(x["probs"][top])[:, None, :] + rng.standard_normal((len(top), BATCHBALD_T, x["probs"].shape[1]))
            p = np.exp(logits - logits.max(-1, keepdims=True))
            return batchbald(p / p.sum(-1, keepdims=True), k, seed=seed)
        return batchbald_top
    return lambda x, k, seed: badge_kmeanspp(x["probs"], x["embeddings"], k, seed=seed)


def run_one(name: str, n: int, k: int, dim: int, classes: int, seed: int) -> dict[str, Any]:
    """Time one strategy on seeded inputs in this process; its peak RSS includes the inputs."""
    x = _inputs(n, dim, classes, seed)
    run = _runner(name)
    t = time.perf_counter()
    run(x, k, seed)
    seconds = time.perf_counter() - t
    return {"bench": "select", "strategy": name, "n": n, "k": k, "dim": dim, "classes": classes,
            "seconds": round(seconds, 4), "input_bytes": int(sum(v.nbytes for v in x.values())),
            "peak_rss_bytes": peak_rss()}


def main(strategies: tuple[str, ...] = BENCH_STRATEGIES, n: int = 100_000, k: int = 100, dim: int = 64,
         classes: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """One child process per strategy; print and return its JSON line."""
    results = []
    for name in strategies:
        cmd = [sys.executable, "-m", "dal_dist.benchmarks.select", "--one", name, str(n), str(k), str(dim),
               str(classes), str(seed)]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            line = {"bench": "select", "strategy": name, "n": n, "k": k, "error": p.stderr.strip()[-500:]}
        else:
            line = json.loads(p.stdout.strip().splitlines()[-1])
        print(json.dumps(line), flush=True)
        results.append(line)
    return results


SHARDED = ("badge", "typiclust", "cluster_margin")  # the strategies with a Ray shard-actor version


def write_scores_dataset(directory: str, x: dict[str, np.ndarray], files: int) -> None:
    """The synthetic inputs as a scores dataset (`id`, `embedding`, `probs`, `margin`) in `files` files."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dal_dist.scoring.scorer import vector_array

    for f, part in enumerate(np.array_split(np.arange(len(x["ids"])), files)):
        pq.write_table(pa.table({"id": pa.array(x["ids"][part]), "embedding": vector_array(x["embeddings"][part]),
                                 "probs": vector_array(x["probs"][part]),
                                 "margin": pa.array(x["scores"][part].astype(np.float32))}),
                       Path(directory) / f"part-{f:05d}.parquet")


def run_from_dataset(name: str, directory: str, k: int, seed: int, workers: int) -> dict[str, Any]:
    """Time `select` over a scores dataset in this process (`workers` Ray shard actors, or 0: one node)."""
    from dal_dist.selection import select

    if workers:
        from dal_dist.ray_connect import connect

        connect(num_cpus=max(2, workers), log_to_driver=False)
    t = time.perf_counter()
    table = select(name, k, scores=directory, seed=seed, distributed=bool(workers), workers=max(workers, 1))
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "ids": table.column("id").to_numpy().tolist(), "peak_rss_bytes": peak_rss()}


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM (reset at exec; ru_maxrss keeps the forking parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main_sharded(strategies: tuple[str, ...] = SHARDED, n: int = 100_000, k: int = 100, dim: int = 64,
                 classes: int = 10, workers: int = 2, files: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Per strategy, one node vs `workers` Ray shard actors over the same Parquet scores dataset, in one run,
    each in its own child process: seconds, the calling process's peak RSS (the shard actors' memory is
    theirs), and whether the picks are the same (one JSON line each)."""
    import tempfile

    bad = [s for s in strategies if s not in SHARDED]
    if bad:
        raise ValueError(f"no sharded version of {bad}: expected names from {SHARDED}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        x = _inputs(n, dim, classes, seed)
        input_bytes = int(x["embeddings"].nbytes + x["probs"].nbytes)
        write_scores_dataset(tmp, x, files)
        del x
        for name in strategies:
            got = {}
            for mode, w in (("single", 0), ("sharded", workers)):
                p = subprocess.run([sys.executable, "-m", "dal_dist.benchmarks.select", "--from-dataset", name, tmp,
                                    str(k), str(seed), str(w)], capture_output=True, text=True, check=False)
                if p.returncode != 0:
                    raise RuntimeError(f"{name} ({mode}): {p.stderr.strip()[-800:]}")
                got[mode] = json.loads(p.stdout.strip().splitlines()[-1])
            one, many = got["single"], got["sharded"]
            line = {"bench": "select-sharded", "strategy": name, "n": n, "k": k, "dim": dim, "classes": classes,
                    "workers": workers, "single_node_s": round(one["seconds"], 3),
                    "sharded_s": round(many["seconds"], 3), "speedup": round(one["seconds"] / many["seconds"], 3),
                    "input_bytes": input_bytes, "single_node_peak_rss_bytes": one["peak_rss_bytes"],
                    "sharded_driver_peak_rss_bytes": many["peak_rss_bytes"], "same_picks": one["ids"] == many["ids"]}
            print(json.dumps(line), flush=True)
            results.append(line)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--one":
        name, *nums = sys.argv[2:]
        print(json.dumps(run_one(name, *map(int, nums))))
    elif len(sys.argv) == 7 and sys.argv[1] == "--from-dataset":
        name, directory, *nums = sys.argv[2:]
        print(json.dumps(run_from_dataset(name, directory, *map(int, nums))))
    else:
        sys.exit("usage: python -m dal_dist.benchmarks.select --one NAME N K DIM CLASSES SEED")
