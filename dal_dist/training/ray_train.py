"""Ray Train glue: run a `TrainingJob` in a `TorchTrainer` worker group and bring rank 0's checkpoint back.

The arrays go to the workers through the object store (`ray.put`, refs in `train_loop_config`)
instead of Ray Data, whose streaming shuffles and block order are not reproducible; labeled sets are
small next to the pool (thousands of images), so shipping them whole is cheap. Each worker runs the
one skeleton (`worker.fit_and_checkpoint`) and reports once, at its end, with its checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dal_dist.atomic import atomic_path
from dal_dist.errors import DalDistError
from dal_dist.models import CHECKPOINT_FILE, ray_runtime_env, runtime_env_for
from dal_dist.training.worker import TrainingJob, TrainResult, WorkerContext, fit_and_checkpoint

logger = logging.getLogger(__name__)


def fit_on_ray_train(job: TrainingJob, data: dict[str, np.ndarray | None],
                     init_state: dict[str, torch.Tensor] | None, out_checkpoint: str | os.PathLike,
                     storage_dir: str | os.PathLike | None = None) -> TrainResult:
    """Run `job` in `job.workers` Ray Train workers and copy rank 0's CHECKPOINT_FILE to `out_checkpoint` atomically.

    `storage_dir` (a temp dir, removed afterwards, when None) holds Ray Train's run directory and must
    be shared storage on a multi-node cluster, since the checkpoint travels through it.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    warn_if_cluster_too_small(job.workers, job.use_gpu, job.name)
    loop_config = {"job": job, "data": {k: ray.put(v) if v is not None else None for k, v in data.items()},
                   "init_state": ray.put(init_state) if init_state is not None else None}
    own_storage = storage_dir is None
    storage = Path(tempfile.mkdtemp(prefix=f"dal-dist-{job.name}-")) if own_storage else Path(storage_dir).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        trainer = TorchTrainer(
            ray_worker_loop, train_loop_config=loop_config,
            scaling_config=ray.train.ScalingConfig(num_workers=job.workers, use_gpu=job.use_gpu),
            run_config=_run_config(storage, f"{job.name}-{Path(out_checkpoint).stem}-{uuid.uuid4().hex[:8]}",
                                   worker_env(ray, job)),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise DalDistError(f"{job.name}: training finished without a checkpoint (run directory {result.path})")
        with result.checkpoint.as_directory() as ckpt_dir:
            _copy_atomic(Path(ckpt_dir) / CHECKPOINT_FILE, Path(out_checkpoint))
        seconds = time.monotonic() - start
    finally:
        if own_storage:
            shutil.rmtree(storage, ignore_errors=True)
    # Train V2 hands back rank 0's return value; the reported metrics are the fallback (V1).
    summary = getattr(result, "return_value", None) or {"metrics": dict(result.metrics or {})}
    metrics = {**summary.get("metrics", {}), "seconds": seconds}
    return TrainResult(checkpoint=Path(out_checkpoint), metrics=metrics, history=summary.get("history", []))


def ray_worker_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Runs in every Ray Train worker: fetch the arrays, run the skeleton, report rank 0's checkpoint once."""
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    job: TrainingJob = config["job"]
    data = {k: ray.get(ref) if ref is not None else None for k, ref in config["data"].items()}
    init_state = ray.get(config["init_state"]) if config["init_state"] is not None else None
    train_ctx = ray.train.get_context()
    ctx = WorkerContext(device=ray.train.torch.get_device(), rank=train_ctx.get_world_rank(),
                        world=train_ctx.get_world_size(), wrap=ray.train.torch.prepare_model,
                        all_reduce=dist.all_reduce, broadcast=lambda t: dist.broadcast(t, src=0))
    # One report, at the end: each `ray.train.report` is a barrier that waits for the controller's
    # poll (seconds), which would dominate the many short trainings of small labeled sets.
    with tempfile.TemporaryDirectory(prefix="dal-dist-ckpt-") as tmp:
        out = fit_and_checkpoint(job, data, init_state, ctx, Path(tmp) / CHECKPOINT_FILE)
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if ctx.rank == 0 else None
        ray.train.report(out["metrics"], checkpoint=checkpoint)
    return out


def warn_if_cluster_too_small(workers: int, use_gpu: bool, what: str) -> None:
    """A worker group larger than the cluster waits for resources forever (unless an autoscaler adds them)."""
    import ray

    if not ray.is_initialized():
        return
    have = ray.cluster_resources()
    need_cpu, need_gpu = workers, workers if use_gpu else 0
    if have.get("CPU", 0) < need_cpu or have.get("GPU", 0) < need_gpu:
        logger.warning("%s: %d workers%s requested but the cluster has %s CPU / %s GPU now; "
                       "training waits until an autoscaler adds nodes", what, workers,
                       " with a GPU each" if use_gpu else "", have.get("CPU", 0), have.get("GPU", 0))


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def worker_env(ray: Any, job: TrainingJob) -> dict[str, Any] | None:
    """The train workers' runtime_env when a plug-in model's module must reach them (after the job's own)."""
    env = runtime_env_for(job.model_config)
    if not env:
        return None
    if not ray.is_initialized():  # TorchTrainer would start a local Ray; start it here, to upload to it
        from dal_dist.ray_connect import connect

        connect(None)
    return ray_runtime_env(env, ray.get_runtime_context().runtime_env)


def _run_config(storage: Path, name: str, worker_runtime_env: dict[str, Any] | None = None) -> Any:
    import inspect

    import ray.train

    kwargs: dict[str, Any] = {"name": name, "storage_path": str(storage)}
    if worker_runtime_env:
        if "worker_runtime_env" not in inspect.signature(ray.train.RunConfig).parameters:
            raise DalDistError("a plug-in model's module reaches Ray Train workers through RunConfig."
                               "worker_runtime_env (Ray Train V2); set RAY_TRAIN_V2_ENABLED=1 or install the "
                               "module on every node")
        kwargs["worker_runtime_env"] = worker_runtime_env
    if hasattr(ray.train, "LoggingConfig"):  # Train V2: keep the controller's INFO lines off the console
        kwargs["logging_config"] = ray.train.LoggingConfig(log_level="WARNING")
    return ray.train.RunConfig(**kwargs)
