"""Distributed exact k-center greedy: each Ray actor holds a shard of the candidates (its own files).

Per pick every actor lowers its minima with the new center and returns its local farthest row
(squared distance, local row, vector); the driver takes the global maximum, ties to the lowest global
row (files in name order, rows in file order: the single-node order), so the picks are identical to
`kcenter_greedy`.  One remote call per actor per pick, a d-float payload each way, one `ray.get` for
all actors; the winning actor learns it won in the same call that carries the next center.

A shard whose actor dies (process killed, node lost) is rebuilt from its files and replayed: the driver
keeps every center sent so far, and a fresh actor that runs `start` and the same `step`s in the same order
holds bit-for-bit the state the lost one had, so the picks do not change.
"""

from __future__ import annotations

import math
import time

import numpy as np
import ray

from dal_dist.errors import DalDistError
from dal_dist.selection.io import ScoresScan, load_embeddings
from dal_dist.selection.kcenter import MinDistances, first_center

SHARD_RESTARTS = 3  # rebuilds of one shard per selection before the selection gives up


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
        self.state: MinDistances | None = None

    def local_labeled(self) -> np.ndarray | None:
        """This shard's labeled rows (the driver gathers them so every shard sees the whole labeled set)."""
        if self.error is not None:
            raise self.error
        return self.labeled_local

    def replay(self, labeled: np.ndarray | None, centers: list[np.ndarray], removes: list[int]
               ) -> tuple[float, int, np.ndarray | None, float]:
        """A rebuilt shard catches up: `start`, then every `step` the lost actor had taken, in order."""
        out = self.start(labeled)
        for center, remove in zip(centers, removes):
            out = self.step(center, remove)
        return out

    def start(self, labeled: np.ndarray | None) -> tuple[float, int, np.ndarray | None, float]:
        """Build the minima against the whole labeled set; return the local farthest row."""
        t = time.perf_counter()
        self.state = MinDistances(self.x, labeled, device=self.device, block_rows=self.block_rows)
        return self._farthest(t)

    def row(self, i: int) -> np.ndarray:
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


def plan_shards(scan: ScoresScan, workers: int) -> list[list[int]]:
    """Contiguous file ranges with about equal candidate counts (contiguity keeps the global order)."""
    counts = np.array([int((~m).sum()) for m in scan.labeled])
    workers = max(1, min(workers, len(counts)))
    bounds = np.searchsorted(np.cumsum(counts), np.arange(1, workers) * counts.sum() / workers, side="left")
    edges = [0] + sorted(set(int(b) + 1 for b in bounds)) + [len(counts)]
    edges = sorted(set(min(e, len(counts)) for e in edges))
    return [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def sharded_kcenter(scan: ScoresScan, k: int, *, workers: int = 2, seed: int = 0, device: str | None = "cpu",
                    storage_dtype: str | None = None, actor_cpus: float = 1, stats: dict | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-center over a scanned scores dataset on `workers` Ray actors; same picks as single node."""
    if not ray.is_initialized():
        ray.init()
    Shard = ray.remote(num_cpus=actor_cpus)(KCenterShard)
    shards = plan_shards(scan, workers)
    actors, offsets, cand_ids = [], [], []
    offset = 0

    def spawn(files: list[int]):
        return Shard.remote([str(scan.files[f]) for f in files], [~scan.labeled[f] for f in files],
                            [scan.labeled[f] for f in files], scan.dim, storage_dtype, device,
                            ids=[scan.ids[f] for f in files])

    history: list[tuple[np.ndarray, int, int]] = []  # (center, winning shard, its local row) per step sent
    restarts = [0] * len(shards)
    lab_ref = None

    def get(j: int, ref, redo):
        """ray.get shard j's result; if its actor died, rebuild it and `redo(j)` the call on the new one."""
        while True:
            try:
                return ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, DalDistError):
                    raise e.cause from None
                raise
            except ray.exceptions.RayActorError as e:
                if restarts[j] >= SHARD_RESTARTS:
                    raise DalDistError(f"k-center shard {j} died {restarts[j] + 1} times; giving up "
                                       f"({str(e).splitlines()[0]})") from e
                restarts[j] += 1
                ray.kill(actors[j])
                actors[j] = spawn(shards[j])
                ref = redo(j)

    def gather(refs: list, redo) -> list:
        return [get(j, ref, redo) for j, ref in enumerate(refs)]

    def caught_up(j: int):
        """The rebuilt shard j, replayed through every step sent so far (a ref to its latest result)."""
        return actors[j].replay.remote(lab_ref, [c for c, _, _ in history],
                                       [loc if w == j else -1 for _, w, loc in history])

    for files in shards:
        actors.append(spawn(files))
        offsets.append(offset)
        ids = np.concatenate([scan.ids[f][~scan.labeled[f]] for f in files])
        cand_ids.append(ids)
        offset += len(ids)
    cand_ids_all = np.concatenate(cand_ids)
    try:
        t0 = time.perf_counter()
        parts = gather([a.local_labeled.remote() for a in actors], lambda j: actors[j].local_labeled.remote())
        parts = [p for p in parts if p is not None]
        labeled = np.concatenate(parts) if parts else None
        lab_ref = ray.put(labeled)
        results = gather([a.start.remote(lab_ref) for a in actors], caught_up)
        init_s = time.perf_counter() - t0
        picks = np.empty(k, dtype=np.int64)
        radii = np.empty(k, dtype=np.float64)
        step_wall, step_compute = [], []
        for t in range(k):
            if t == 0 and labeled is None:
                g = first_center(offset, seed)
                s = int(np.searchsorted(offsets, g, side="right") - 1)
                d2, local = math.inf, g - offsets[s]

                def row_again(j: int, row: int = local):
                    caught_up(j)  # calls on one actor run in order: the row is read from the rebuilt state
                    return actors[j].row.remote(row)

                vec = get(s, actors[s].row.remote(local), row_again)
            else:
                # Global max; ties -> lowest global row (shards are in global order, each reports its lowest).
                s = max(range(len(actors)), key=lambda j: (results[j][0], -j))
                d2, local, vec = results[s][0], results[s][1], results[s][2]
            picks[t], radii[t] = offsets[s] + local, math.sqrt(d2)
            if t == k - 1:
                break
            ts = time.perf_counter()
            history.append((vec, s, local))
            results = gather([a.step.remote(vec, local if j == s else -1) for j, a in enumerate(actors)], caught_up)
            step_wall.append(time.perf_counter() - ts)
            step_compute.append(max(r[3] for r in results))
    finally:
        for a in actors:
            ray.kill(a)
    if stats is not None:
        wall, comp = np.array(step_wall or [0.0]), np.array(step_compute or [0.0])
        stats.update(workers=len(actors), init_s=init_s, s_per_pick=float(wall.mean()), restarts=sum(restarts),
                     compute_s_per_pick=float(comp.mean()), overhead_s_per_pick=float((wall - comp).mean()))
    return cand_ids_all[picks], radii
