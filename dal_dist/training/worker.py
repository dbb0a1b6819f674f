"""One worker skeleton for every model that trains: determinism → build (warm-started) → fit → checkpoint.

A `TrainingJob` says what to train (model config, the method's hyper-parameters, its fit function);
`fit_and_checkpoint` runs it the same way in this process (`executor="local"`) and in each Ray Train
worker, so device choice, CUDA determinism, warm start and the checkpoint's metadata live here once.

Determinism is the contract: the driver's crash/resume guarantee (same seed → same selected ids)
needs a round's checkpoint to be bit-identical for the same seed, worker count and data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from dal_dist.device import torch_device
from dal_dist.errors import DalDistError
from dal_dist.models import DALModel, ModelConfig, build_model, load_checkpoint, save_checkpoint

Metrics = dict[str, float]
History = list[dict[str, float]]


@dataclass(frozen=True)
class WorkerContext:
    """Where one training process runs: its rank among `world`, its device, and DDP's hooks (None in-process)."""

    device: torch.device
    rank: int = 0
    world: int = 1
    wrap: Callable[[nn.Module], nn.Module] | None = None  # ray.train.torch.prepare_model: device + DDP
    all_reduce: Callable[[torch.Tensor], Any] | None = None  # sum over ranks, in place
    broadcast: Callable[[torch.Tensor], Any] | None = None  # rank 0's value to every rank, in place


# fit(model, config, data, ctx) trains `model` in place and returns (metrics, history).
FitFn = Callable[[DALModel, Any, dict[str, Any], WorkerContext], tuple[Metrics, History]]


@dataclass(frozen=True)
class TrainingJob:
    """What to train; shipped whole to every Ray Train worker (`fit` travels by reference, so module-level)."""

    name: str  # "train", "sraal": Ray Train run name, the checkpoint's metadata key, config prefix in errors
    model_config: ModelConfig
    config: BaseModel  # the method's hyper-parameters, stored in the checkpoint's metadata
    fit: FitFn
    workers: int = 1
    use_gpu: bool = False


@dataclass
class TrainResult:
    """What one round's training produced: the checkpoint file and its metrics."""

    checkpoint: Path
    metrics: dict[str, float]  # train_loss, train_acc, epochs_run, seconds; val_acc, test_acc, ll_loss if any
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch run


def make_deterministic(device: torch.device) -> None:
    """On CUDA, pick deterministic kernels (cuBLAS workspace, cuDNN) so a seed replays bit for bit."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def local_device(use_gpu: bool, what: str) -> torch.device:
    """This process's device for a job: CUDA when `use_gpu` (refused, naming `what`, without one), else CPU."""
    if use_gpu and not torch.cuda.is_available():
        raise DalDistError(f"{what}.use_gpu is true but this process sees no CUDA device")
    return torch_device("cuda" if use_gpu else False)


def warm_start_state(model_config: ModelConfig, init_checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load the warm-start weights once in the driver and check they fit this round's model."""
    prev = load_checkpoint(init_checkpoint, expect_name=model_config.name)
    state = prev.state_dict()
    try:
        build_model(model_config).load_state_dict(state)
    except RuntimeError as e:
        raise DalDistError(f"init_checkpoint {init_checkpoint}: its weights do not fit model config "
                           f"{model_config.name!r} ({str(e).splitlines()[0]})") from e
    return {k: v.detach().cpu() for k, v in state.items()}


def fit_and_checkpoint(job: TrainingJob, data: dict[str, np.ndarray | None],
                       init_state: dict[str, torch.Tensor] | None, ctx: WorkerContext,
                       path: Path) -> dict[str, Any]:
    """The body every training process runs: build (warm-started), fit, and on rank 0 write `path`."""
    make_deterministic(ctx.device)
    model = build_model(job.model_config)
    if init_state is not None:
        model.load_state_dict(init_state)
    metrics, history = job.fit(model, job.config, data, ctx)
    if ctx.rank == 0:
        save_checkpoint(model.cpu(), path, extra={job.name: job.config.model_dump(), "metrics": metrics})
    return {"metrics": metrics, "history": history}
