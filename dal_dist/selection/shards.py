"""Ray plumbing for sharded selection: one actor per contiguous range of scores files, calls fanned out to
all of them, a dead shard rebuilt from its files and replayed.

Shards are contiguous file ranges in name order, so concatenating the shards' candidates gives the
single-node candidate order (files by name, rows in file order) and a global row is a shard's offset
plus its local row. Every state-changing call sent to a shard is recorded (`ShardGroup.call(...,
mutates=True)`); a shard whose actor dies (process killed, node lost) is respawned on the same files
and sent the recorded calls again in the same order, which rebuilds bit for bit the state the lost one
had (the shard bodies are deterministic), so the selection does not change.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import ray

from dal_dist.errors import DalDistError
from dal_dist.selection.io import ScoresScan

SHARD_RESTARTS = 3  # rebuilds of one shard per selection before the selection gives up


def shard_gpus(device: str | None, gpus_per_worker: float | None, workers: int, cluster_gpus: float) -> float:
    """GPUs each k-center shard actor requests: as given (requested, not counted: an autoscaler may add GPU
    nodes; Ray hides the GPUs from an actor that asks for none, so device auto then runs on its CPU); auto: the
    GPUs up now shared, at most one a shard, none for device cpu; device cuda with no GPU for the shards is
    refused (it would fail in every shard)."""
    from dal_dist.scoring.placement import gpus_per_actor

    if device == "cpu":
        return 0.0
    g = gpus_per_actor(gpus_per_worker, workers, cluster_gpus)
    if g == 0 and device not in (None, "auto"):
        raise DalDistError(f"--device {device} with --distributed: the shard actors need GPUs and the Ray cluster "
                           "has none now; request them with --gpus-per-worker (an autoscaler adds GPU nodes) or "
                           "use --device auto")
    return g


def plan_shards(scan: ScoresScan, workers: int) -> list[list[int]]:
    """Contiguous file ranges with about equal candidate counts (contiguity keeps the global order)."""
    counts = np.array([int((~m).sum()) for m in scan.labeled])
    workers = max(1, min(workers, len(counts)))
    bounds = np.searchsorted(np.cumsum(counts), np.arange(1, workers) * counts.sum() / workers, side="left")
    edges = [0] + sorted(set(int(b) + 1 for b in bounds)) + [len(counts)]
    edges = sorted(set(min(e, len(counts)) for e in edges))
    return [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def shard_candidates(scan: ScoresScan, shards: list[list[int]]) -> tuple[list[int], np.ndarray]:
    """(first global candidate row of each shard, candidate ids in global order: files by name, rows in order)."""
    offsets, ids, offset = [], [], 0
    for files in shards:
        part = np.concatenate([scan.ids[f][~scan.labeled[f]] for f in files])
        offsets.append(offset)
        ids.append(part)
        offset += len(part)
    return offsets, np.concatenate(ids)


def shard_files(scan: ScoresScan, files: list[int]) -> dict[str, Any]:
    """A shard body's file arguments: locations, candidate masks, labeled masks and ids of its files."""
    return {"files": [str(scan.files[f]) for f in files], "keep": [~scan.labeled[f] for f in files],
            "labeled": [scan.labeled[f] for f in files], "ids": [scan.ids[f] for f in files]}


class PendingCall:
    """A read-only call started on one shard; `result()` waits for it (redoing it on a rebuilt shard)."""

    def __init__(self, group: "ShardGroup", j: int, method: str, args: tuple, ref: Any, actor: int) -> None:
        self.group, self.j, self.method, self.args, self.ref, self.actor = group, j, method, args, ref, actor

    def result(self) -> Any:
        return self.group._get(self.j, self.ref, self.method, self.args, False, self.actor)


class ShardGroup:
    """The driver's handle on one actor per shard: fan calls out, gather in shard order, rebuild a dead one.

    `body` is the actor class; `make_kwargs(j)` its constructor's keyword arguments for shard j. A
    `DalDistError` raised inside a shard (bad input it found) is raised here as itself.
    """

    def __init__(self, body: type, make_kwargs: Callable[[int], dict[str, Any]], shards: int, *,
                 actor_cpus: float = 1, actor_gpus: float = 0) -> None:
        self.make_kwargs = make_kwargs
        self.remote_cls = ray.remote(num_cpus=actor_cpus, num_gpus=actor_gpus)(body)
        self.history: list[list[tuple[str, tuple]]] = [[] for _ in range(shards)]  # state-changing calls
        self.restarts = [0] * shards  # also which actor of shard j is the live one (0: the first)
        self.replayed: list[list] = [[] for _ in range(shards)]  # refs of the last rebuild's replayed calls
        self.actors = [self.remote_cls.remote(**make_kwargs(j)) for j in range(shards)]

    def __len__(self) -> int:
        return len(self.actors)

    def _submit(self, j: int, method: str, args: tuple):
        return getattr(self.actors[j], method).remote(*args)

    def _respawn(self, j: int, e: Exception):
        """A new actor for shard j with every recorded call resent (their refs kept in `replayed[j]`)."""
        if self.restarts[j] >= SHARD_RESTARTS:
            raise DalDistError(f"selection shard {j} died {self.restarts[j] + 1} times; giving up "
                               f"({str(e).splitlines()[0]})") from e
        self.restarts[j] += 1
        ray.kill(self.actors[j])
        self.actors[j] = self.remote_cls.remote(**self.make_kwargs(j))
        self.replayed[j] = [self._submit(j, m, a) for m, a in self.history[j]]

    def _get(self, j: int, ref, method: str, args: tuple, mutates: bool, actor: int):
        """`ref`'s result; if the shard's actor `actor` died, the call redone on its rebuilt successor.

        Several calls in flight on one dead actor each see it die: the first rebuilds the shard, the others
        are redone on the actor it built (rebuilding again would kill that one and what runs on it).
        """
        while True:
            try:
                return ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, DalDistError):
                    raise e.cause from None
                raise
            except ray.exceptions.RayActorError as e:
                if actor == self.restarts[j]:
                    self._respawn(j, e)  # calls on one actor run in submission order
                actor = self.restarts[j]
                # A state-changing call is the last one recorded (they are never in flight together): its
                # replayed copy carries its result.
                ref = self.replayed[j][-1] if mutates else self._submit(j, method, args)

    def call(self, method: str, *args: Any, per_shard: Sequence[tuple] | None = None, mutates: bool = False
             ) -> list:
        """Every shard's `method(*args)` (or `method(*per_shard[j])`), results in shard order."""
        per = [tuple(a) for a in per_shard] if per_shard is not None else [args] * len(self.actors)
        if mutates:
            for j, a in enumerate(per):
                self.history[j].append((method, a))
        actors = list(self.restarts)
        refs = [self._submit(j, method, a) for j, a in enumerate(per)]
        return [self._get(j, ref, method, per[j], mutates, actors[j]) for j, ref in enumerate(refs)]

    def call_one(self, j: int, method: str, *args: Any, mutates: bool = False) -> Any:
        """Shard j's `method(*args)`."""
        if mutates:
            self.history[j].append((method, args))
        actor = self.restarts[j]
        return self._get(j, self._submit(j, method, args), method, args, mutates, actor)

    def submit(self, j: int, method: str, *args: Any) -> "PendingCall":
        """Start shard j's read-only `method(*args)` without waiting (`PendingCall.result` waits)."""
        actor = self.restarts[j]
        return PendingCall(self, j, method, args, self._submit(j, method, args), actor)

    def kill(self) -> None:
        """Stop every shard actor (their memory is the embeddings: free it as soon as the picks are made)."""
        for a in self.actors:
            ray.kill(a)
