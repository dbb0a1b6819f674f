"""Distributed exact k-center greedy: each Ray actor holds a shard of the candidates (its own files).

Per pick every actor lowers its minima with the new center and returns its local farthest row
(squared distance, local row, vector); the driver takes the global maximum, ties to the lowest global
row (files in name order, rows in file order: the single-node order), so the picks are identical to
`kcenter_greedy`.  One remote call per actor per pick, a d-float payload each way, one `ray.get` for
all actors; the winning actor learns it won in the same call that carries the next center.

A shard whose actor dies is rebuilt from its files and replayed (`selection.shards`): the picks do not
change.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from dal_dist.errors import DalDistError
from dal_dist.ray_connect import connect
from dal_dist.selection.io import ScoresScan, load_embeddings
from dal_dist.selection.kcenter import first_center, min_distances
from dal_dist.selection.shards import ShardGroup, plan_shards, shard_candidates, shard_files, shard_gpus


class KCenterShard:
    """One shard's candidates and their exact nearest-center distances (the Ray actor body)."""

    def __init__(self, files: list[str], keep: list[np.ndarray], labeled: list[np.ndarray], dim: int,
                 storage_dtype: str | None, device: str | None, block_rows: int | None = None,
                 ids: list[np.ndarray] | None = None) -> None:
        paths = list(files)  # local paths or URIs (dal_dist.fs)
        self.error: DalDistError | None = None
        self.x = self.labeled_local = None
        try:  # bad input (NaN/inf) is kept and raised by the first call: a failed constructor loses the message
            self.x = load_embeddings(paths, keep, dim, storage_dtype, ids)
            self.labeled_local = load_embeddings(paths, labeled, dim, storage_dtype, ids) \
                if any(m.any() for m in labeled) else None
        except DalDistError as e:
            self.error = e
        self.device, self.block_rows = device, block_rows
        self.state: Any = None  # MinDistances, or DeviceMinDistances on a GPU shard

    def local_labeled(self) -> np.ndarray | None:
        """This shard's labeled rows (the driver gathers them so every shard sees the whole labeled set)."""
        if self.error is not None:
            raise self.error
        return self.labeled_local

    def start(self, labeled: np.ndarray | None) -> tuple[float, int, np.ndarray | None, float]:
        """Build the minima against the whole labeled set; return the local farthest row."""
        t = time.perf_counter()
        self.state = min_distances(self.x, labeled, device=self.device, block_rows=self.block_rows)
        return self._farthest(t)

    def row(self, i: int) -> np.ndarray:
        """Local row i as float64 (the first center when nothing is labeled)."""
        return self.state.row(i)

    def step(self, center: np.ndarray, remove: int) -> tuple[float, int, np.ndarray | None, float]:
        """Drop our row `remove` if we won the last pick (-1 otherwise), add the center, report our farthest."""
        t = time.perf_counter()
        if remove >= 0:
            self.state.remove(remove)
        self.state.add_center(center)
        return self._farthest(t)

    def _farthest(self, t0: float) -> tuple[float, int, np.ndarray | None, float]:
        if self.state.n == 0:
            return -math.inf, -1, None, time.perf_counter() - t0
        d2, i = self.state.farthest()
        vec = self.state.row(i) if i >= 0 else None
        return d2, i, vec, time.perf_counter() - t0


@dataclass
class ShardedRun:
    """Timings and restarts of one sharded selection (what `stats` reports)."""

    init_s: float = 0.0
    step_wall: list[float] = field(default_factory=list)
    step_compute: list[float] = field(default_factory=list)


class ShardActors:
    """The k-center calls on a `ShardGroup` of `KCenterShard` actors (start and steps recorded for replay)."""

    def __init__(self, scan: ScoresScan, shards: list[list[int]], *, device: str | None,
                 storage_dtype: str | None, actor_cpus: float, actor_gpus: float = 0) -> None:
        self.group = ShardGroup(KCenterShard, lambda j: {**shard_files(scan, shards[j]), "dim": scan.dim,
                                                          "storage_dtype": storage_dtype, "device": device},
                                len(shards), actor_cpus=actor_cpus, actor_gpus=actor_gpus)
        self.restarts = self.group.restarts

    def start(self) -> tuple[np.ndarray | None, list]:
        """Gather the whole labeled set from the shards, start every shard on it: (labeled, local farthest rows)."""
        parts = [p for p in self.group.call("local_labeled") if p is not None]
        labeled = np.concatenate(parts) if parts else None
        return labeled, self.group.call("start", ray.put(labeled), mutates=True)

    def row(self, j: int, local: int) -> np.ndarray:
        """Row `local` of shard j (the first center when nothing is labeled)."""
        return self.group.call_one(j, "row", local)

    def step(self, center: np.ndarray, winner: int, local: int) -> list:
        """Send a new center to every shard (the winner also drops its row `local`): their local farthest rows."""
        return self.group.call("step", per_shard=[(center, local if j == winner else -1)
                                                  for j in range(len(self.group))], mutates=True)

    def kill(self) -> None:
        """Stop every shard actor."""
        self.group.kill()


def greedy_picks(group: ShardActors, results: list, offsets: list[int], n: int, k: int, *, seed: int,
                 unlabeled: bool, run: ShardedRun) -> tuple[np.ndarray, np.ndarray]:
    """The greedy loop over the shards: (global candidate rows in pick order, radii), the single-node picks."""
    picks = np.empty(k, dtype=np.int64)
    radii = np.empty(k, dtype=np.float64)
    for t in range(k):
        if t == 0 and unlabeled:
            g = first_center(n, seed)
            s = int(np.searchsorted(offsets, g, side="right") - 1)
            d2, local = math.inf, g - offsets[s]
            vec = group.row(s, local)
        else:
            # Global max; ties -> lowest global row (shards are in global order, each reports its lowest).
            s = max(range(len(results)), key=lambda j: (results[j][0], -j))
            d2, local, vec = results[s][0], results[s][1], results[s][2]
        picks[t], radii[t] = offsets[s] + local, math.sqrt(d2)
        if t == k - 1:
            break
        ts = time.perf_counter()
        results = group.step(vec, s, local)
        run.step_wall.append(time.perf_counter() - ts)
        run.step_compute.append(max(r[3] for r in results))
    return picks, radii


def kcenter_greedy_sharded(scan: ScoresScan, k: int, *, workers: int = 2, seed: int = 0,
                           device: str | None = "cpu", storage_dtype: str | None = None, actor_cpus: float = 1,
                           gpus_per_worker: float | None = None,
                           stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, radii): exact k-center over a scanned scores dataset on `workers` Ray actors,
    the same picks as `kcenter_greedy` on one node, for datasets too large for one process. Shards request
    GPUs (`shard_gpus`) and run the pick loop there (`kcenter_device`) unless `device` is cpu."""
    connect()
    shards = plan_shards(scan, workers)
    offsets, cand_ids = shard_candidates(scan, shards)
    gpus = shard_gpus(device, gpus_per_worker, len(shards), float(ray.cluster_resources().get("GPU", 0.0)))
    group = ShardActors(scan, shards, device=device, storage_dtype=storage_dtype, actor_cpus=actor_cpus,
                        actor_gpus=gpus)
    run = ShardedRun()
    try:
        t0 = time.perf_counter()
        labeled, results = group.start()
        run.init_s = time.perf_counter() - t0
        picks, radii = greedy_picks(group, results, offsets, len(cand_ids), k, seed=seed,
                                    unlabeled=labeled is None, run=run)
    finally:
        group.kill()
    if stats is not None:
        wall, comp = np.array(run.step_wall or [0.0]), np.array(run.step_compute or [0.0])
        stats.update(workers=len(shards), gpus_per_worker=gpus, init_s=run.init_s, s_per_pick=float(wall.mean()),
                     restarts=sum(group.restarts), compute_s_per_pick=float(comp.mean()),
                     overhead_s_per_pick=float((wall - comp).mean()))
    return cand_ids[picks], radii
