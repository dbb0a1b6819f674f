"""Distributed MC-dropout scoring: Ray Data streams the pool through an actor pool of `BatchScorer`s.

`score_pool` runs four named steps: check the arguments and paths (before Ray starts), plan (pool,
checkpoint, labeled ids: every structural problem found before any work), run (Ray Data
`read_parquet → map_batches(BatchScorer, concurrency=workers) → write_parquet`, or the same scorer in
this process) into a staging directory, and publish it (`scoring.publish`: verified — exactly one row
per unlabeled id — then renamed into place). An interrupt or error removes the staging directory.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError
from dal_dist.scoring.acquisition import parse_acquisitions
from dal_dist.interrupts import sigterm_raises
from dal_dist.scoring.placement import (check_fits_local_cluster, check_gpus_per_worker, local_cluster_ceiling,
                                        plan_cpus)
from dal_dist.scoring.publish import REJECTS_DIR, abandon, check_replaceable, make_staging, publish
from dal_dist.scoring.scorer import (EMBEDDING_DTYPES, EMBEDDING_SOURCES, MAX_MC_SAMPLES, BatchScorer,
                                     check_batch_memory, check_channels, check_decode, check_precision,
                                     resolve_overlap, score_batches)

log = logging.getLogger(__name__)

EXTRA_SCORES = ("pred_loss", "sraal")  # model outputs scoring can emit besides the MC-dropout acquisitions
EXECUTORS = ("ray", "local")
MAX_THREADS = 1024  # torch threads per actor: beyond any node's cores
# Read/write tasks are light; they must still fit beside the scoring actors. Actors never reserve every
# CPU of a node: Ray Data's file-listing task asks for a whole one (see `placement.plan_cpus`).
IO_TASK_CPUS = 0.25
# Ray Data's Parquet listing reads footers in batches of RAY_DATA_PARQUET_FOOTER_BATCH_SIZE files (10) on a
# pool of footer-reader actors: 32 of them by default, whatever the number of files.
MAX_FOOTER_READERS = 32


@dataclass
class ScoreSummary:
    """What a scoring job did: counts and throughput (printed as the job's last JSON line)."""

    rows: int
    labeled_rows: int
    rejects: int
    seconds: float
    images_per_s: float
    startup_s: float | None
    steady_images_per_s: float | None
    out: str
    workers: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoringPlan:
    """Everything a run needs, checked: the pool's files, the ids to score, what to compute and where."""

    pool: str | os.PathLike
    checkpoint: Path
    out: Path | str
    acquisitions: list[str]
    mc_samples: int
    files: list[str]
    pool_rows: int
    pool_bytes: int
    labeled_ids: np.ndarray | None
    labeled_in_pool: int
    embed_labeled: bool
    embedding_source: str
    embedding_dtype: str
    batch_size: int
    seed: int
    overwrite: bool
    runtime_env: dict[str, Any] | None = None  # what scoring actors need to import a plug-in model's module
    keep_probs: bool = False  # write `probs` (mean softmax, dropout off; BADGE)
    columns: list[str] | None = None  # input columns the scorer reads; None: the pool's decode columns
    exclude_ids: np.ndarray | None = None  # ids not scored at all (a random-subset round scores the rest)
    excluded_in_pool: int = 0
    write_embedding: bool = True  # off: no `embedding` column (a top-k round over cached embeddings)
    precision: str | None = None  # forward-pass autocast: bf16, fp16, fp32; None: bf16 on CUDA, fp32 on CPU
    decode: str = "auto"  # JPEG rows: auto (on the device when it is CUDA), cpu (PIL) or device (torchvision)
    overlap: bool | None = None  # decode/copy of batch i+1 beside compute of batch i; None: on GPU actors only

    @property
    def expected(self) -> int:
        """Rows (scores + rejects) the output must hold: every pool row, less the labeled ones unless embedded."""
        return self.pool_rows - self.excluded_in_pool - (0 if self.embed_labeled else self.labeled_in_pool)

    def marker(self) -> dict[str, Any]:
        """What `_dal_scores.json` records about how the output was made."""
        return {"acquisitions": self.acquisitions, "mc_samples": self.mc_samples, "seed": self.seed,
                "embedding": self.embedding_source, "embedding_dtype": self.embedding_dtype,
                "labeled_rows": self.labeled_in_pool if self.embed_labeled else 0,
                **({"keep_probs": True} if self.keep_probs else {}),
                **({"embedding_column": False} if not self.write_embedding else {}),
                "precision": self.precision or "auto"}

    def summary(self, written: int, rejects: int, t_call: float, first: float | None, steady: float | None,
                workers: int) -> ScoreSummary:
        """The job's summary once published: counts, wall time since the call, throughput."""
        seconds = time.time() - t_call
        return ScoreSummary(rows=written, labeled_rows=self.labeled_in_pool if self.embed_labeled else 0,
                            rejects=rejects, seconds=seconds, images_per_s=written / seconds if seconds else 0.0,
                            startup_s=(first - t_call) if first else None, steady_images_per_s=steady,
                            out=str(self.out), workers=workers)


def score_pool(pool: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike, *,
               acquisitions: str | list[str] = "bald", mc_samples: int = 20, workers: int = 1,
               gpus_per_worker: float | None = None, cpus_per_worker: float | None = None,
               threads_per_worker: int | None = None,
               labeled: str | os.PathLike | np.ndarray | None = None, embed_labeled: bool = False,
               embedding_source: str = "head", embedding_dtype: str = "float16", batch_size: int = 256,
               seed: int = 0, overwrite: bool = False, progress: bool = True,
               executor: str = "ray", address: str | None = None, keep_probs: bool = False,
               start_timeout: float | None = None, exclude: np.ndarray | None = None,
               precision: str | None = None, decode: str = "auto", overlap: bool | None = None) -> ScoreSummary:
    """Score every unlabeled image of a Parquet pool on a Ray cluster; write one row per id.

    Every argument, path and the checkpoint/pool fit are checked before Ray starts; Ray is started
    (`ray.init(address=address)`) only then, and only when not already running. `executor="local"`
    streams the pool through the same `BatchScorer` in this process (no Ray): for pools of a few ten
    thousand images, starting an actor pool costs more than the scoring itself. `keep_probs` adds the
    `probs` column (the mean softmax with dropout off, C float32 per row) that BADGE needs. Ctrl-C or SIGTERM
    (raised as `interrupts.Terminated`) leaves no staging directory and publishes nothing. While no batch
    has been scored (actors waiting for an autoscaler to add nodes), what is awaited is logged every
    `WAIT_REPORT_S` seconds; `start_timeout` (seconds) then ends the job with an error saying so.
    `exclude`: ids neither scored nor embedded (a round that scores a random subset of the unlabeled pool);
    they must not be `labeled` too. `precision` (bf16, fp16, fp32) is the forward passes' autocast, default
    bf16 on a GPU and fp32 on CPU; the scores are always computed in float32 from the softmax. `decode`:
    where JPEG rows are decoded, "cpu" (PIL, row by row), "device" (torchvision, batched, on each actor's
    device; `pool.jpeg`) or "auto" (the device when it is a GPU). `overlap`: each actor takes two batches at
    a time, decoding and copying one while the model runs the other (`BatchScorer`); None (default) does so
    on GPU actors, where the card would otherwise wait for the host, and not on CPU, where both share cores.
    """
    t_call = time.time()
    if start_timeout is not None and not start_timeout > 0:
        raise DalDistError(f"start_timeout (--start-timeout) = {start_timeout}: expected a positive number of seconds")
    names = check_arguments(acquisitions, mc_samples=mc_samples, workers=workers, batch_size=batch_size,
                            threads_per_worker=threads_per_worker, cpus_per_worker=cpus_per_worker,
                            gpus_per_worker=gpus_per_worker, embedding_source=embedding_source,
                            embedding_dtype=embedding_dtype, executor=executor)
    check_decode(decode)
    out = check_output(out, {"pool": pool, "checkpoint": checkpoint, "--labeled file": labeled}, overwrite)
    plan = plan_scoring(pool, checkpoint, out, names, mc_samples=mc_samples, labeled=labeled,
                        embed_labeled=embed_labeled, embedding_source=embedding_source,
                        embedding_dtype=embedding_dtype, batch_size=batch_size, seed=seed, overwrite=overwrite)
    plan.keep_probs, plan.precision, plan.decode = bool(keep_probs), check_precision(precision), decode
    plan.overlap = None if overlap is None else bool(overlap)
    exclude_rows(plan, exclude)
    if executor == "local":
        with sigterm_raises():
            return run_local(plan, threads_per_worker, t_call)
    check_fits_before_start(address, workers, gpus_per_worker, cpus_per_worker, threads_per_worker)
    ray, started_here = start_ray(address)
    if started_here:
        check_fits_local_cluster(ray.cluster_resources(), workers, gpus_per_worker)
    with sigterm_raises():  # after ray.init, which installs its own SIGTERM handler (restored after)
        return run_ray(ray, plan, workers=workers, gpus_per_worker=gpus_per_worker,
                       cpus_per_worker=cpus_per_worker, threads_per_worker=threads_per_worker,
                       progress=progress, t_call=t_call, start_timeout=start_timeout)


# ------------------------------------------------------------------------------------------ validate
def check_arguments(acquisitions: str | list[str], *, mc_samples: int, workers: int, batch_size: int,
                    threads_per_worker: int | None, cpus_per_worker: float | None, gpus_per_worker: float | None,
                    embedding_source: str, embedding_dtype: str, executor: str) -> list[str]:
    """Every plain argument in range (one line naming the option), before any file is read; the acquisitions."""
    names = parse_acquisitions(acquisitions, extra=EXTRA_SCORES)
    if not _is_int(mc_samples) or not 2 <= mc_samples <= MAX_MC_SAMPLES:
        raise DalDistError(f"--mc-samples must be >= 2 (MC dropout needs several samples) and <= {MAX_MC_SAMPLES}, "
                           f"got {mc_samples}")
    for option, value in (("--workers", workers), ("--batch-size", batch_size)):
        if not _is_int(value) or value < 1:
            raise DalDistError(f"{option} must be an integer >= 1, got {value}")
    if threads_per_worker is not None and (not _is_int(threads_per_worker) or threads_per_worker < 1):
        raise DalDistError(f"--threads-per-worker must be an integer >= 1, got {threads_per_worker}")
    if threads_per_worker is not None and threads_per_worker > MAX_THREADS:
        raise DalDistError(f"--threads-per-worker must be <= {MAX_THREADS}, got {threads_per_worker}")
    if cpus_per_worker is not None and not cpus_per_worker >= 0:
        raise DalDistError(f"--cpus-per-worker must be >= 0, got {cpus_per_worker}")
    if gpus_per_worker is not None:
        check_gpus_per_worker(gpus_per_worker)
    if embedding_source not in EMBEDDING_SOURCES:
        raise DalDistError(f"--embedding must be 'head' or 'backbone', got {embedding_source!r}")
    if embedding_dtype not in EMBEDDING_DTYPES:
        raise DalDistError(f"--embedding-dtype must be float16 or float32, got {embedding_dtype!r}")
    if executor not in EXECUTORS:
        raise DalDistError(f"executor must be 'ray' or 'local', got {executor!r}")
    return names


def check_fits_before_start(address: str | None, workers: int, gpus_per_worker: float | None,
                            cpus_per_worker: float | None, threads_per_worker: int | None) -> None:
    """Before starting a local Ray (nothing will add nodes to it), refuse what even this machine's
    totals cannot give; `check_fits_local_cluster` checks again against what Ray then reports."""
    from dal_dist.ray_connect import starts_local_cluster

    ray = sys.modules.get("ray")
    if not starts_local_cluster(address) or (ray is not None and ray.is_initialized()):
        return
    ceiling = local_cluster_ceiling()
    check_fits_local_cluster(ceiling, workers, gpus_per_worker, started=False)
    plan_cpus([ceiling["CPU"]], workers, cpus_per_worker, threads_per_worker)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_output(out: str | os.PathLike, inputs: dict[str, Any], overwrite: bool) -> Path | str:
    """The output location, refused when it is, holds or sits inside an input, is a file, or is not replaceable.

    `inputs` maps what an input is ("pool", "checkpoint") to its location (arrays and None are skipped).
    `--overwrite` replaces only a dal-dist scores output (`publish.check_replaceable`).
    """
    out_local = fsx.is_local(out)  # a URI other than file:// is published by copy + marker (see publish.promote)
    out = out_local if out_local is not None else str(out)
    key = _location_key(out)
    for what, where in inputs.items():
        if where is None or not isinstance(where, (str, os.PathLike)):
            continue
        if (fsx.is_local(where) is None) != (out_local is None):
            continue  # one on local disk, one elsewhere: apart (and no object store is asked)
        other = _location_key(where)
        if other[0] != key[0]:
            continue
        relation = ("is" if other[1] == key[1] else "holds" if _is_under(other[1], key[1])
                    else "is inside" if _is_under(key[1], other[1]) else None)
        if relation:
            raise DalDistError(f"--out {fsx.describe(out)}: {relation} the {what} {fsx.describe(where)}; scores need "
                               "a directory of their own, apart from every input")
    if fsx.is_file(out):
        raise DalDistError(f"--out {fsx.describe(out)}: is a file; scores are written as a directory")
    if fsx.list_dir(out):
        check_replaceable(out, overwrite)
    return out


def _location_key(where: Any) -> tuple[str, str]:
    """(filesystem kind, absolute path with symlinks resolved) for comparing locations."""
    local = fsx.is_local(where)
    if local is not None:
        return "local", os.path.realpath(local)
    fs, path = fsx.resolve(where)
    return fs.type_name, "/" + path.strip("/")


def _is_under(path: str, root: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")


# ---------------------------------------------------------------------------------------------- plan
def plan_scoring(pool: str | os.PathLike, checkpoint: str | os.PathLike, out: Path | str, names: list[str], *,
                 mc_samples: int, labeled: str | os.PathLike | np.ndarray | None, embed_labeled: bool,
                 embedding_source: str, embedding_dtype: str, batch_size: int, seed: int,
                 overwrite: bool) -> ScoringPlan:
    """Structural checks before any work (schema, duplicate ids, checkpoint fit, batch memory) and the plan."""
    from dal_dist.models import load_checkpoint, runtime_env_for
    from dal_dist.pool import pool_files, read_ids, validate_pool

    info = validate_pool(pool)
    files = pool_files(pool)
    model = load_checkpoint(checkpoint)
    check_model_fits(model, names, checkpoint, pool, info.num_classes, info.image_shape)
    check_batch_memory(model, mc_samples, batch_size, info.image_shape)
    labeled_ids = None
    if labeled is not None:
        labeled_ids = np.unique(read_ids(labeled) if not isinstance(labeled, np.ndarray) else labeled)
    labeled_in_pool = count_in_pool(files, labeled_ids)
    if labeled_ids is not None and labeled_in_pool < len(labeled_ids):
        log.warning("%d labeled ids are not in the pool %s (ignored)", len(labeled_ids) - labeled_in_pool, pool)
    return ScoringPlan(pool=pool, checkpoint=Path(checkpoint), out=out, acquisitions=names, mc_samples=mc_samples,
                       files=files, pool_rows=info.rows, pool_bytes=info.bytes, labeled_ids=labeled_ids,
                       labeled_in_pool=labeled_in_pool, embed_labeled=embed_labeled,
                       embedding_source=embedding_source, embedding_dtype=embedding_dtype, batch_size=batch_size,
                       seed=seed, overwrite=overwrite, runtime_env=runtime_env_for(model.config))


def check_model_fits(model: Any, names: list[str], checkpoint: str | os.PathLike, pool: str | os.PathLike,
                     num_classes: int | None, image_shape: tuple[int, int, int] | None) -> None:
    """The checkpoint can emit the requested scores for this pool's labels and images, or a one-line error."""
    if "sraal" in names and not hasattr(model, "state_score"):
        raise DalDistError(f"checkpoint {checkpoint}: `sraal` needs an SRAAL model (name 'sraal', with a state "
                           f"discriminator); this one holds model {model.config.name!r}")
    if "pred_loss" in names and not model.has_loss_module:
        raise DalDistError(f"checkpoint {checkpoint}: `pred_loss` needs a model trained with Learning Loss "
                           f"(config extra.learning_loss); this one has no loss-prediction module")
    if num_classes and num_classes > model.config.num_classes:
        raise DalDistError(f"checkpoint {checkpoint}: model has {model.config.num_classes} classes but pool "
                           f"{pool} has labels up to {num_classes - 1}")
    check_channels(model, image_shape, str(pool))


def exclude_rows(plan: ScoringPlan, exclude: np.ndarray | None) -> None:
    """Record the ids a plan leaves out entirely (they must not also be labeled: those are embedded or skipped)."""
    if exclude is None:
        return
    exclude = np.unique(np.asarray(exclude, dtype=np.int64))
    if plan.labeled_ids is not None and len(np.intersect1d(exclude, plan.labeled_ids)):
        raise DalDistError("exclude: ids that are also labeled (a row is either labeled or left out)")
    plan.exclude_ids, plan.excluded_in_pool = exclude, count_in_pool(plan.files, exclude)


def count_in_pool(files: list[str], labeled_ids: np.ndarray | None) -> int:
    """How many of `labeled_ids` the pool holds (reads only the `id` column)."""
    if labeled_ids is None or not len(labeled_ids):
        return 0
    return int(sum(np.isin(read_id_column(f), labeled_ids).sum() for f in files))


def read_id_column(location: str) -> np.ndarray:
    """The `id` column of one pool file."""
    with fsx.open_input(location) as f:
        return pq.read_table(f, columns=["id"]).column("id").to_numpy()


def read_columns(files: list[str]) -> list[str]:
    """The decode columns the pool has (raw-pixel shape columns are optional)."""
    from dal_dist.pool import DECODE_COLUMNS

    with fsx.open_input(files[0]) as f:
        names = pq.read_schema(f).names
    return [c for c in DECODE_COLUMNS if c in names]


# -------------------------------------------------------------------------------------- run: local
def run_local(plan: ScoringPlan, threads: int | None, t_call: float,
              scorer_cls: type[BatchScorer] = BatchScorer) -> ScoreSummary:
    """In-process scoring; the process's torch threads are as they were after it (the driver trains next)."""
    import torch

    before = torch.get_num_threads()
    try:
        return score_in_process(plan, threads, t_call, scorer_cls)
    finally:
        torch.set_num_threads(before)


def score_in_process(plan: ScoringPlan, threads: int | None, t_call: float,
                     scorer_cls: type[BatchScorer]) -> ScoreSummary:
    """Same scorer, same staging → verify → promote as on Ray; one Parquet file per pool file."""
    scorer = scorer_cls(plan.checkpoint.read_bytes(), plan.acquisitions, plan.mc_samples,
                         labeled_ids=plan.labeled_ids, embed_labeled=plan.embed_labeled,
                         embedding_source=plan.embedding_source, embedding_dtype=plan.embedding_dtype,
                         seed=plan.seed, threads=threads, rejects_dir=None, device=None, keep_probs=plan.keep_probs,
                         exclude_ids=plan.exclude_ids, write_embedding=plan.write_embedding,
                         precision=plan.precision, decode=plan.decode, overlap=plan.overlap)
    staging = None
    first = None
    try:
        staging = make_staging(plan.out)
        fsx.make_dirs(fsx.join(staging, "data"))
        scorer.rejects_dir = fsx.join(staging, REJECTS_DIR)
        cols = plan.columns or read_columns(plan.files)
        for i, f in enumerate(plan.files):
            parts: list[pa.Table] = []
            try:
                pf = pq.ParquetFile(fsx.open_input(f))
                batches = (pa.Table.from_batches([b]) for b in pf.iter_batches(batch_size=plan.batch_size,
                                                                                  columns=cols))
                for out_part in score_batches(scorer, batches):
                    if out_part.num_rows:  # a batch of labeled rows only comes back empty (other schema)
                        parts.append(out_part)
                    first = first or time.time()
            except (pa.ArrowException, OSError) as e:
                raise DalDistError(f"{f}: cannot read (truncated or corrupt?): {e}") from e
            table = pa.concat_tables(parts) if parts else scorer.empty_table()
            # No dictionary pages: embeddings and scores are all distinct, and trying costs 2x the write.
            fsx.write_table_atomic(fsx.join(staging, "data", f"part-{i:05d}.parquet"), table, use_dictionary=False)
        written, rejects = publish(staging, plan.out, plan.expected, plan.overwrite, plan.marker())
    except BaseException as e:
        abandon(staging, plan.out, e)
    return plan.summary(written, rejects, t_call, first, None, workers=1)


# ---------------------------------------------------------------------------------------- run: Ray
def start_ray(address: str | None) -> tuple[Any, bool]:
    """The `ray` module, connected (see dal_dist.ray_connect), and whether this call started a local
    cluster (no address, no RAY_ADDRESS): one that no autoscaler will grow."""
    from dal_dist.ray_connect import connect  # the local executor needs no Ray at all

    return connect(address)


def run_ray(ray: Any, plan: ScoringPlan, *, workers: int, gpus_per_worker: float | None,
            cpus_per_worker: float | None, threads_per_worker: int | None, progress: bool,
            t_call: float, scorer_cls: type[BatchScorer] = BatchScorer,
            start_timeout: float | None = None) -> ScoreSummary:
    """Ray Data: read the pool → `BatchScorer` actors → write Parquet into staging, then publish."""
    from dal_dist.scoring.placement import (ActorResources, gpu_actor_cpus, node_cpus, plan_actor_resources,
                                            plan_cpus)

    nodes = ray.nodes()
    cpus, threads = plan_cpus(node_cpus(nodes), workers, cpus_per_worker, threads_per_worker)
    res = plan_actor_resources(ray.cluster_resources(), workers, gpus_per_worker, cpus)
    cpus, threads = gpu_actor_cpus(nodes, res.num_gpus, (cpus, threads), cpus_per_worker, threads_per_worker)
    res = ActorResources(num_cpus=cpus, num_gpus=res.num_gpus)
    overlap = resolve_overlap(plan.overlap, res.device)
    ckpt_ref = ray.put(plan.checkpoint.read_bytes())
    labeled_ref = ray.put(plan.labeled_ids) if plan.labeled_ids is not None else None
    exclude_ref = ray.put(plan.exclude_ids) if plan.exclude_ids is not None else None
    staging, tracker = None, None
    try:
        tracker = start_tracker(ray)
        staging = make_staging(plan.out)
        ds = read_pool_dataset(ray, plan, workers)
        ds = ds.map_batches(
            scorer_cls,
            fn_constructor_kwargs=dict(
                checkpoint=[ckpt_ref], acquisitions=plan.acquisitions, mc_samples=plan.mc_samples,
                labeled_ids=[labeled_ref] if labeled_ref is not None else None, embed_labeled=plan.embed_labeled,
                embedding_source=plan.embedding_source, embedding_dtype=plan.embedding_dtype, seed=plan.seed,
                threads=threads, rejects_dir=fsx.join(staging, REJECTS_DIR), progress=tracker,
                device=res.device, keep_probs=plan.keep_probs,
                exclude_ids=[exclude_ref] if exclude_ref is not None else None,
                write_embedding=plan.write_embedding, precision=plan.precision, decode=plan.decode,
                overlap=overlap),
            batch_size=plan.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers, **actor_calls(overlap)),
            **res.map_batches_kwargs(), **actor_runtime_env(ray, plan.runtime_env),
        )
        with StartWatchdog(ray, tracker, workers, res, start_timeout) as watchdog:
            try:
                write_scores(ds, staging, plan, workers, tracker, progress)
            except KeyboardInterrupt:
                if watchdog.expired:
                    raise DalDistError(watchdog.message()) from None
                raise
        rows, first, first_rows, last = tracker_times(ray, tracker)
        written, rejects = publish(staging, plan.out, plan.expected, plan.overwrite, plan.marker())
    except BaseException as e:
        abandon(staging, plan.out, e)
    finally:
        if tracker is not None:
            ray.kill(tracker)
    steady = (rows - first_rows) / (last - first) if first and last and last > first else None
    return plan.summary(written, rejects, t_call, first, steady, workers=workers)


def actor_calls(overlap: bool) -> dict[str, Any]:
    """`ActorPoolStrategy` kwargs for overlap: two calls at a time per actor, both in the UDF (the scorer's lock
    keeps the model to one), so one batch is decoded and copied while the other computes."""
    return {"max_concurrent_calls_per_actor": 2, "enable_true_multi_threading": True} if overlap else {}


def actor_runtime_env(ray: Any, env: dict[str, Any] | None) -> dict[str, Any]:
    """`runtime_env=` for the scoring actors when a plug-in model's module must reach them (after the job's own)."""
    from dal_dist.models import ray_runtime_env

    env = ray_runtime_env(env, ray.get_runtime_context().runtime_env)
    return {"runtime_env": env} if env else {}


def start_tracker(ray: Any) -> Any:
    """The progress actor, on the driver's node: losing another node must not lose the counter (soft).

    Its class travels by value: imported by name, its worker would run the `dal_dist.scoring` face and
    load torch (seconds of start-up that the scoring actors starting beside it would wait for).
    """
    from ray import cloudpickle
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import dal_dist.scoring.progress as progress_module
    from dal_dist.scoring.progress import ProgressCounter

    cloudpickle.register_pickle_by_value(progress_module)
    return ray.remote(num_cpus=0)(ProgressCounter).options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=True)).remote()


def tracker_times(ray: Any, tracker: Any) -> tuple[int, float | None, int, float | None]:
    """(rows, first batch time, its rows, last batch time) from the progress actor; zeros if it is gone."""
    try:
        return ray.get(tracker.get.remote())
    except ray.exceptions.RayActorError:  # progress is informational: the row count comes from the files
        return 0, None, 0, None


def read_pool_dataset(ray: Any, plan: ScoringPlan, workers: int) -> Any:
    """`read_parquet` of the pool's decode columns, blocks sized so every actor gets several."""
    from dal_dist.pool import pool_listing

    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_min_block_size, ctx.target_max_block_size
    # Blocks are the unit an actor takes: size them so every actor gets several (the dataset keeps a
    # copy of the context, so the global one is restored right away).
    ctx.target_max_block_size = block_bytes(plan.pool_bytes, plan.pool_rows, workers, plan.batch_size)
    ctx.target_min_block_size = min(saved[0] or 1 << 20, ctx.target_max_block_size // 2)
    try:
        # One read task per actor keeps up with scoring (decode is vectorised) and, on a small
        # machine, avoids booting a crowd of reader processes that compete with the actors' start.
        pool_fs, pool_infos = pool_listing(plan.pool)
        local_pool = isinstance(pool_fs, pafs.LocalFileSystem)
        with footer_readers(len(plan.files)):
            return ray.data.read_parquet(
                [str(f) for f in plan.files] if local_pool else [i.path for i in pool_infos],
                filesystem=None if local_pool else pool_fs, concurrency=workers, num_cpus=IO_TASK_CPUS,
            ).select_columns(plan.columns or read_columns(plan.files))
    finally:
        ctx.target_min_block_size, ctx.target_max_block_size = saved


def write_scores(ds: Any, staging: fsx.Location, plan: ScoringPlan, workers: int, tracker: Any,
                 progress: bool) -> None:
    """Run the pipeline into staging/data (in this thread, so an interrupt stops Ray Data here) with a bar."""
    data = fsx.join(staging, "data")
    fsx.make_dirs(data)  # made here, not by the write tasks: a task finishing after an abandon cannot re-create it
    data_fs, data_path = fsx.resolve(data)
    data_fs = None if isinstance(data_fs, pafs.LocalFileSystem) else data_fs
    with progress_bar(tracker, plan.expected, progress):
        ds.write_parquet(data_path, filesystem=data_fs, min_rows_per_file=plan.batch_size * 64,
                         ray_remote_args={"num_cpus": IO_TASK_CPUS}, concurrency=workers, try_create_dir=False,
                         use_dictionary=False)  # as run_local: distinct values, and dictionary pages read 3x slower


WAIT_REPORT_S = 30.0  # how often a job whose actors have not scored a batch says what it waits for


class StartWatchdog:
    """Until the first batch is scored, say what the job waits for (actors the cluster cannot place yet, e.g.
    GPU nodes an autoscaler has still to add); past `timeout` seconds, stop the job from the main thread."""

    def __init__(self, ray: Any, tracker: Any, workers: int, res: Any, timeout: float | None):
        self.ray, self.tracker, self.workers, self.res, self.timeout = ray, tracker, workers, res, timeout
        self.expired = False
        self._done = threading.Event()
        self._t0 = time.monotonic()

    def message(self) -> str:
        avail = self.ray.available_resources()
        return (f"no batch scored within start_timeout (--start-timeout) = {self.timeout:g} s: waiting for "
                f"{self.workers} scoring actor(s) of {self.res.num_cpus:g} CPU and {self.res.num_gpus:g} GPU each; "
                f"the cluster has {avail.get('CPU', 0):g} CPU and {avail.get('GPU', 0):g} GPU free now")

    def _scored(self) -> bool | None:
        """Whether a batch has been scored; None while the counter cannot be asked (it may itself be waiting)."""
        try:
            return self.ray.get(self.tracker.get.remote(), timeout=5)[0] > 0
        except Exception:
            return None

    def _watch(self) -> None:
        import _thread

        next_report = WAIT_REPORT_S
        while not self._done.wait(1.0):
            waited = time.monotonic() - self._t0
            if waited >= next_report or (self.timeout is not None and waited >= self.timeout):
                scored = self._scored()
                if scored:
                    return
                if scored is False and self.timeout is not None and waited >= self.timeout:
                    self.expired = True
                    _thread.interrupt_main()  # unwinds like Ctrl-C: staging removed, nothing published
                    return
                log.warning("%.0f s and no batch scored yet: waiting for %d actor(s) of %g CPU / %g GPU each "
                            "(free now: %s)", waited, self.workers, self.res.num_cpus, self.res.num_gpus,
                            {k: v for k, v in self.ray.available_resources().items() if k in ("CPU", "GPU")})
                next_report += WAIT_REPORT_S

    def __enter__(self) -> "StartWatchdog":
        if self.tracker is not None:
            threading.Thread(target=self._watch, name="dal-dist-start-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()


@contextmanager
def progress_bar(tracker: Any, total: int, show: bool) -> Iterator[None]:
    """A tqdm bar that a daemon thread updates from the progress actor while the block runs."""
    import ray
    from tqdm import tqdm

    bar = tqdm(total=total, unit="img", desc="scoring", disable=not show, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 10.0)
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.5):
            try:
                rows = ray.get(tracker.get.remote(), timeout=5)[0]
                bar.update(rows - bar.n)
            except Exception:  # progress is best-effort
                pass

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        yield
    finally:
        done.set()
        th.join(timeout=6)
        bar.close()


def footer_readers_for(n_files: int) -> int:
    """Footer-reader actors worth starting: one per footer batch, at most Ray's default pool of 32."""
    per_batch = max(1, int(os.environ.get("RAY_DATA_PARQUET_FOOTER_BATCH_SIZE", "10")))
    return max(1, min(MAX_FOOTER_READERS, -(-n_files // per_batch)))


@contextmanager
def footer_readers(n_files: int) -> Iterator[None]:
    """Size Ray Data's footer-reader pool to the pool's files while the read is planned.

    The listing starts its actors all at once and only the first ceil(files / 10) ever get a footer batch;
    on a small machine the other process boots compete with the scoring actor's start (a one-file pool
    reached its first scored batch ~3 s sooner on 2 cores). A value the user set in the environment wins.
    """
    key = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(footer_readers_for(n_files))
    try:
        yield
    finally:
        os.environ.pop(key, None)


def block_bytes(pool_bytes: int, rows: int, workers: int, batch_size: int) -> int:
    """Target block size: ≥ 4 blocks per actor, ≥ one scoring batch per block, ≤ 128 MiB."""
    per_row = max(1.0, pool_bytes / max(rows, 1))
    want = pool_bytes / (4 * workers)
    return int(min(128 << 20, max(want, per_row * batch_size)))
