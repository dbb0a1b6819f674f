"""Where scoring actors run: the GPU share each one requests, and the `map_batches` kwargs that ask for it.

Pure functions of the flags and the cluster's resource totals, so they are tested without a GPU.
Ray's rules for a GPU request: any fraction up to 1 (actors then share a card: 0.5 = two per GPU),
whole numbers above 1. A request the cluster cannot meet right now is allowed (an autoscaler may
add GPU nodes), but it is reported so a static cluster does not wait silently forever.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from dal_dist.errors import DalDistError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorResources:
    """What one scoring actor reserves and where its model runs."""

    num_cpus: float
    num_gpus: float

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus > 0 else "cpu"

    def map_batches_kwargs(self) -> dict[str, Any]:
        """`num_cpus`/`num_gpus` for `Dataset.map_batches` (no `num_gpus` key for a CPU actor)."""
        kwargs: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus > 0:
            kwargs["num_gpus"] = self.num_gpus
        return kwargs


def gpus_per_actor(gpus_per_worker: float | None, workers: int, cluster_gpus: float) -> float:
    """GPUs each scoring actor requests.

    `gpus_per_worker` None means auto: 0 on a CPU cluster; on a GPU cluster the GPUs are shared
    evenly, at most one per actor (4 actors on 2 GPUs: 0.5 each; 2 actors on 8 GPUs: 1 each).
    An explicit value is validated against Ray's rules and used as given (0 forces CPU).
    """
    if workers < 1:
        raise DalDistError(f"--workers must be >= 1, got {workers}")
    if gpus_per_worker is None:
        if cluster_gpus <= 0:
            return 0.0
        return min(1.0, _floor_fraction(cluster_gpus / workers))
    g = check_gpus_per_worker(gpus_per_worker)
    if g > 0 and g * workers > cluster_gpus + 1e-9:
        log.warning("%d workers x %g GPUs need %g GPUs; the cluster has %g now: actors wait for an "
                    "autoscaler to add GPU nodes (or forever on a fixed cluster)",
                    workers, g, g * workers, cluster_gpus)
    return g


def check_gpus_per_worker(gpus_per_worker: float) -> float:
    """An explicit GPU share under Ray's rules (>= 0; above 1 a whole number), checked before Ray starts."""
    try:
        g = float(gpus_per_worker)
    except (TypeError, ValueError):
        raise DalDistError(f"--gpus-per-worker must be a number, got {gpus_per_worker!r}") from None
    if not g >= 0:
        raise DalDistError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
    if g > 1 and not g.is_integer():
        raise DalDistError(f"--gpus-per-worker above 1 must be a whole number (Ray's rule), got {gpus_per_worker}")
    return g


def plan_actor_resources(cluster: dict[str, float], workers: int, gpus_per_worker: float | None,
                         cpus_per_worker: float) -> ActorResources:
    """Combine the CPU reservation (`plan_cpus`) with the GPU share for one actor.

    `cluster` is `ray.cluster_resources()`. A GPU actor still decodes its batches on the host: it
    keeps the CPU reservation the planner gave it, so the card is not starved by its own input.
    """
    return ActorResources(num_cpus=float(cpus_per_worker),
                          num_gpus=gpus_per_actor(gpus_per_worker, workers, float(cluster.get("GPU", 0.0))))


def check_fits_local_cluster(cluster: dict[str, float], workers: int, gpus_per_worker: float | None,
                             started: bool = True) -> None:
    """On a cluster dal-dist started itself (nothing will add nodes), refuse requests that could never run.

    Elsewhere a request beyond today's resources may wait for an autoscaler (`gpus_per_actor` warns);
    here it would wait forever (GPUs) or start more model-holding actor processes than there are CPUs.
    `started=False`: `cluster` is `local_cluster_ceiling()`, checked before Ray starts.
    """
    cpus, gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    has = "started has" if started else "would start here has at most"
    if gpus_per_worker and gpus_per_worker * workers > gpus + 1e-9:
        raise DalDistError(f"--gpus-per-worker {gpus_per_worker} x --workers {workers} needs "
                           f"{gpus_per_worker * workers:g} GPUs; the local Ray cluster dal-dist {has} {gpus:g} "
                           "and nothing will add any (use --gpus-per-worker 0, fewer workers, or --address of a "
                           "cluster with GPUs)")
    if workers > max(1.0, cpus):
        raise DalDistError(f"--workers {workers}: the local Ray cluster dal-dist {has} {cpus:g} CPUs; each "
                           f"worker is a process holding the model, so use --workers <= {max(1, int(cpus))} "
                           "(or --address of a bigger cluster)")


def local_cluster_ceiling() -> dict[str, float]:
    """The most a local Ray started on this machine can have, known before it starts: CPUs (Ray counts at
    most the machine's) and GPUs (at most what torch, /dev/nvidia* or CUDA_VISIBLE_DEVICES show)."""
    import glob

    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = max(torch.cuda.device_count(), len(glob.glob("/dev/nvidia[0-9]*")),
               len([d for d in visible.split(",") if d.strip()]) if visible else 0)
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def plan_cpus(node_cpus: list[float], workers: int, cpus_per_worker: float | None,
              threads_per_worker: int | None) -> tuple[float, int]:
    """CPUs each actor reserves and torch threads it runs, on a cluster of nodes with these CPU counts.

    Ray Data's file-listing task needs one whole CPU *on one node*. With actors spread over two 1-CPU nodes, 0.5 CPU each (what a cluster-wide
    total of 2 suggests) leaves 0.5 free on each node and the listing task waits forever. Default
    reservation c = (smallest node - 1) / ceil(workers / nodes): some node holds at most
    ceil(workers / nodes) actors (pigeonhole), so it keeps >= 1 CPU free. Threads: the CPUs of a
    node shared by the actors on it, at least 1.
    """
    if workers < 1:
        raise DalDistError(f"--workers must be >= 1, got {workers}")
    nodes = [c for c in node_cpus if c > 0] or [1.0]
    per_node = -(-workers // len(nodes))  # ceil: actors the fullest node holds under SPREAD
    if cpus_per_worker is None:
        cpus_per_worker = min(1.0, max(0.0, (min(nodes) - 1.0) / per_node))
    if cpus_per_worker < 0:
        raise DalDistError(f"--cpus-per-worker must be >= 0, got {cpus_per_worker}")
    if cpus_per_worker * per_node + 1.0 > max(nodes) + 1e-9:  # even the biggest node would be left < 1 CPU
        raise DalDistError(f"--cpus-per-worker {cpus_per_worker} x --workers {workers} leaves no node a free CPU "
                           f"for reading the pool (node CPUs: {sorted(nodes)})")
    threads = threads_per_worker or max(1, int(min(nodes) // per_node))
    return float(cpus_per_worker), int(threads)


def gpu_actor_cpus(nodes: list[dict[str, Any]], gpus_per_actor: float, planned: tuple[float, int],
                   cpus_per_worker: float | None, threads_per_worker: int | None) -> tuple[float, int]:
    """(CPUs, threads) of a GPU actor: by default its share of a GPU node's CPUs, so its decode keeps the card fed.

    A node with G GPUs and C CPUs holds G / g actors of g GPUs each; each may reserve (C - 1) / (G / g)
    CPUs (one left for Ray Data's reads), threads = that, floored. The smallest share over the GPU nodes
    up now is used; never less than the CPU plan (`plan_cpus`). With `--cpus-per-worker` given, a CPU
    actor, or no GPU node up yet (an autoscaler still to add them), the CPU plan stands.
    """
    if cpus_per_worker is not None or gpus_per_actor <= 0:
        return planned
    shares = [(float(r.get("CPU", 0.0)) - 1.0) * gpus_per_actor / float(r["GPU"])
              for r in (n.get("Resources", {}) for n in nodes if n.get("Alive")) if float(r.get("GPU", 0.0)) > 0]
    if not shares:
        return planned
    cpus = max(planned[0], _floor_fraction(max(0.0, min(shares))))
    return cpus, threads_per_worker or max(planned[1], int(cpus))


def node_cpus(nodes: list[dict[str, Any]]) -> list[float]:
    """CPU counts of the alive nodes in `ray.nodes()`."""
    return [float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes if n.get("Alive")]


def _floor_fraction(x: float) -> float:
    """Round a GPU share down to 1/100: Ray accounts fractions in fixed point, shares must sum to <= 1."""
    return max(0.01, int(x * 100) / 100)
