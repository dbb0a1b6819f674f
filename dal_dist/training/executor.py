"""Where a `TrainingJob` runs: in this process (`executor="local"`) or in a Ray Train worker group."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from dal_dist.errors import DalDistError
from dal_dist.training.ray_train import fit_on_ray_train
from dal_dist.training.worker import TrainingJob, TrainResult, WorkerContext, fit_and_checkpoint, local_device

EXECUTORS = ("ray", "local")


def check_executor(executor: str) -> None:
    """Refuse an unknown executor before any work is done."""
    if executor not in EXECUTORS:
        raise DalDistError(f"executor must be 'ray' or 'local', got {executor!r}")


def run_training_job(job: TrainingJob, data: dict[str, np.ndarray | None],
                     init_state: dict[str, torch.Tensor] | None, out_checkpoint: str | os.PathLike, *,
                     executor: str = "ray", storage_dir: str | os.PathLike | None = None) -> TrainResult:
    """Run `job` and write `out_checkpoint`; the local executor skips Ray Train's worker start-up (20-30 s).

    Both executors run the same skeleton with the same seeds, so on CPU they give the same weights.
    """
    check_executor(executor)
    if executor == "ray":
        return fit_on_ray_train(job, data, init_state, out_checkpoint, storage_dir)
    if job.workers != 1:
        raise DalDistError(f"{job.name}.workers={job.workers}: the local executor trains in one process "
                           f"(use executor ray for data-parallel training)")
    device = local_device(job.use_gpu, job.name)
    start = time.monotonic()
    out = fit_and_checkpoint(job, data, init_state, WorkerContext(device=device), Path(out_checkpoint))
    return TrainResult(checkpoint=Path(out_checkpoint), metrics={**out["metrics"], "seconds": time.monotonic() - start},
                       history=out["history"])
