"""The one selection entry point: `select(strategy, k, ...)` checks its arguments and runs `select_<strategy>`.

The CLI (`dal-dist select`), the jobs and the driver all call `select`; it returns the selection table
(`id` in pick order, plus `radius` for k-center picks, `score` for top-k and the stochastic strategies,
`d2` for BADGE, `typicality` for TypiClust, `value` (score × density^β) and `density` for information
density, `cluster` for Cluster-Margin, `batch_mi` for BatchBALD), which `write_selection` publishes. Options only some strategies use (`OPTION_USERS`: beta, clusters, ...) are refused elsewhere.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from dal_dist.errors import DalDistError
from dal_dist.pool import read_ids
from dal_dist.selection.badge import select_badge
from dal_dist.selection.batchbald import check_mc_samples, select_batchbald
from dal_dist.selection.cluster_margin import select_cluster_margin
from dal_dist.selection.coreset import select_kcenter
from dal_dist.selection.density import select_density
from dal_dist.selection.hybrid import select_hybrid
from dal_dist.selection.init import select_kcenter_init
from dal_dist.selection.kcenter import STORAGE_DTYPES
from dal_dist.selection.random import select_random
from dal_dist.selection.stochastic import check_beta, select_stochastic
from dal_dist.selection.topk import select_topk
from dal_dist.selection.typiclust import select_typiclust

STOCHASTIC = {"powerbald": "power", "softmax": "softmax", "softrank": "softrank"}  # Kirsch et al. 2023
STRATEGIES = ("topk", "kcenter", "hybrid", "random", "kcenter-init", *STOCHASTIC, "badge", "typiclust", "density",
              "cluster_margin", "batchbald")
DISTRIBUTED = ("kcenter", "badge", "typiclust", "cluster_margin")  # with Ray shard actors (`--distributed`)
# Options only some strategies use: anything else given one is refused (one line naming the option).
OPTION_USERS = {
    "beta (--beta)": (*STOCHASTIC, "density"),
    "clusters (--clusters)": ("typiclust", "cluster_margin"),
    "cluster_file (--cluster-file)": ("cluster_margin",),
    "checkpoint (--checkpoint)": ("batchbald",),  # re-runs the model on its candidates
    "mc_samples (--mc-samples)": ("batchbald",),
}


def _table(ids: np.ndarray, **values: np.ndarray) -> pa.Table:
    """The selection table: int64 `id` in pick order, then float64 value columns (`radius` or `score`)."""
    return pa.table({"id": pa.array(ids, pa.int64()), **{k: pa.array(v, pa.float64()) for k, v in values.items()}})


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_select_arguments(strategy: str, k: int, *, seed: int = 0, workers: int = 2, device: str | None = "auto",
                           storage_dtype: str | None = None, beta: float | None = None,
                           clusters: int | None = None, cluster_file: str | os.PathLike | None = None,
                           checkpoint: str | os.PathLike | None = None, mc_samples: int | None = None,
                           distributed: bool = False, gpus_per_worker: float | None = None) -> None:
    """Every plain argument of `select` in range, whatever the strategy uses, before any file is read."""
    if strategy not in STRATEGIES:
        raise DalDistError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if distributed and strategy not in DISTRIBUTED:
        raise DalDistError(f"--distributed (Ray shard actors) is for the strategies {', '.join(DISTRIBUTED)}, not "
                           f"{strategy} (it streams over the scores or runs on one node)")
    check_option_users(strategy, beta=beta, clusters=clusters, cluster_file=cluster_file, checkpoint=checkpoint,
                       mc_samples=mc_samples)
    if beta is not None:
        check_beta(beta)
    if mc_samples is not None:
        check_mc_samples(mc_samples)
    if clusters is not None and (not _is_int(clusters) or clusters < 1):
        raise DalDistError(f"clusters (--clusters) = {clusters}: expected a positive integer")
    if not _is_int(k) or k <= 0:
        raise DalDistError(f"k = {k}: expected a positive integer")
    if not _is_int(seed) or seed < 0:
        raise DalDistError(f"seed (--seed) = {seed}: expected an integer >= 0")
    if not _is_int(workers) or workers < 1:
        raise DalDistError(f"workers (--workers) = {workers}: expected an integer >= 1")
    if storage_dtype is not None and storage_dtype not in STORAGE_DTYPES:
        raise DalDistError(f"storage_dtype (--storage-dtype) = {storage_dtype!r}: expected one of "
                           f"{', '.join(STORAGE_DTYPES)}")
    if gpus_per_worker is not None:
        check_shard_gpus(strategy, gpus_per_worker, distributed, device)
    if device not in (None, "auto"):
        from dal_dist.device import parse_device, torch_device

        if distributed:  # the shard actors hold the GPUs, not this process: the name only
            parse_device(device)
        else:
            torch_device(device)  # an unknown name, or cuda without a GPU: refused here, not inside a kernel


def check_shard_gpus(strategy: str, gpus_per_worker: float, distributed: bool, device: str | None) -> None:
    """--gpus-per-worker sizes k-center's shard actors (the only shards whose work runs on a GPU)."""
    from dal_dist.scoring.placement import check_gpus_per_worker

    if not distributed or strategy != "kcenter":
        raise DalDistError(f"--gpus-per-worker sizes the shard actors of --distributed kcenter, not "
                           f"{'a single-node ' if not distributed else ''}{strategy}")
    if check_gpus_per_worker(gpus_per_worker) > 0 and device == "cpu":
        raise DalDistError(f"--gpus-per-worker {gpus_per_worker} with --device cpu: the shards would hold GPUs and "
                           "leave them idle; use --device auto or cuda")


def check_option_users(strategy: str, **options: object) -> None:
    """An option given (not None) to a strategy that does not use it is refused, naming who does use it."""
    for name, users in OPTION_USERS.items():
        if options.get(name.split(" ")[0]) is not None and strategy not in users:
            who = f"the strategy {users[0]}" if len(users) == 1 else f"the strategies {', '.join(users)}"
            raise DalDistError(f"{name} is only used by {who}, not {strategy}")


def select(strategy: str, k: int, *, scores: str | os.PathLike | None = None,
           pool: str | os.PathLike | None = None, labeled: str | os.PathLike | None = None,
           by: str | None = None, candidates: int | None = None, seed: int = 0,
           distributed: bool = False, workers: int = 2, device: str | None = "auto",
           storage_dtype: str | None = None, beta: float | None = None, clusters: int | None = None,
           cluster_file: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
           mc_samples: int | None = None, gpus_per_worker: float | None = None) -> pa.Table:
    """Run one strategy and return the selection table (`id` in pick order, `radius`/`score` where defined)."""
    check_select_arguments(strategy, k, seed=seed, workers=workers, device=device, storage_dtype=storage_dtype,
                           beta=beta, clusters=clusters, cluster_file=cluster_file, checkpoint=checkpoint,
                           mc_samples=mc_samples, distributed=distributed, gpus_per_worker=gpus_per_worker)
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
    if strategy in BATCH_AWARE:
        return select_batch_aware(strategy, k, scores=scores, labeled_ids=labeled_ids, seed=seed, by=by,
                                  beta=beta, candidates=candidates, clusters=clusters, cluster_file=cluster_file,
                                  pool=pool, checkpoint=checkpoint, mc_samples=mc_samples, device=device,
                                  distributed=distributed, workers=workers)
    ids, radii = select_kcenter(scores, k, labeled_ids=labeled_ids, seed=seed, distributed=distributed,
                                workers=workers, device=device, storage_dtype=storage_dtype,
                                gpus_per_worker=gpus_per_worker)
    return _table(ids, radius=radii)


BATCH_AWARE = (*STOCHASTIC, "badge", "typiclust", "density", "cluster_margin", "batchbald")


def select_batch_aware(strategy: str, k: int, *, scores: str | os.PathLike, labeled_ids: np.ndarray | None,
                       seed: int, by: str | None, beta: float | None, candidates: int | None, clusters: int | None,
                       cluster_file: str | os.PathLike | None, pool: str | os.PathLike | None,
                       checkpoint: str | os.PathLike | None, mc_samples: int | None, device: str | None,
                       distributed: bool = False, workers: int = 2) -> pa.Table:
    """The batch-aware strategies of issue 15 (arguments already checked by `check_select_arguments`)."""
    if strategy in STOCHASTIC:
        ids, vals = select_stochastic(scores, k, by=by or "bald", mode=STOCHASTIC[strategy],
                                      beta=1.0 if beta is None else beta, labeled_ids=labeled_ids, seed=seed)
        return _table(ids, score=vals)
    if strategy == "badge":
        if distributed:
            from dal_dist.selection.badge_sharded import select_badge_sharded  # imports Ray

            ids, d2 = select_badge_sharded(scores, k, labeled_ids=labeled_ids, seed=seed, workers=workers)
        else:
            ids, d2 = select_badge(scores, k, labeled_ids=labeled_ids, seed=seed)
        return _table(ids, d2=d2)
    if strategy == "typiclust":
        cap = {"max_clusters": clusters} if clusters is not None else {}
        if distributed:
            from dal_dist.selection.kmeans_sharded import select_typiclust_sharded  # imports Ray

            ids, typ = select_typiclust_sharded(scores, k, labeled_ids=labeled_ids, seed=seed, workers=workers, **cap)
        else:
            ids, typ = select_typiclust(scores, k, labeled_ids=labeled_ids, seed=seed, **cap)
        return _table(ids, typicality=typ)
    if strategy == "density":
        ids, value, dens = select_density(scores, k, by=by or "bald", beta=1.0 if beta is None else beta,
                                          labeled_ids=labeled_ids)
        return _table(ids, value=value, density=dens)
    if strategy == "cluster_margin":
        clusterer = None
        if distributed:
            from dal_dist.selection.kmeans_sharded import sharded_clusterer  # imports Ray

            clusterer = sharded_clusterer(workers)
        ids, cl = select_cluster_margin(scores, k, by=by or "margin", candidates=candidates, clusters=clusters,
                                        cluster_file=cluster_file, labeled_ids=labeled_ids, seed=seed,
                                        clusterer=clusterer)
        return pa.table({"id": pa.array(ids, pa.int64()), "cluster": pa.array(cl, pa.int64())})
    ids, mi = select_batchbald(scores, k, pool=pool, checkpoint=checkpoint, candidates=candidates,
                               mc_samples=20 if mc_samples is None else mc_samples, by=by or "bald",
                               labeled_ids=labeled_ids, seed=seed, device=device)
    return _table(ids, batch_mi=mi)
