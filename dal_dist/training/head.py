"""Training a head on cached embeddings (frozen backbone): the classifier's skeleton, rows instead of images.

With the backbone frozen, a round's model is an `embedding-head` over the embeddings `dal-dist embed`
wrote once; fitting it is a few linear layers over at most a few hundred thousand rows, so it runs in
this process (`TrainingJob` through `fit_and_checkpoint`: the same determinism, warm start and
checkpoint as the image classifier), with no image decoded.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dal_dist.errors import DalDistError
from dal_dist.models import DALModel, ModelConfig
from dal_dist.training.config import TrainConfig
from dal_dist.training.executor import run_training_job
from dal_dist.training.fit import make_optimizer
from dal_dist.training.worker import History, Metrics, TrainingJob, TrainResult, WorkerContext, warm_start_state


def check_rows(rows: Any, labels: Any, config: ModelConfig, what: str) -> None:
    """Rows must be N×D floats of the head's width with one integer label each, within its classes."""
    if not isinstance(rows, np.ndarray) or rows.ndim != 2 or not np.issubdtype(rows.dtype, np.floating):
        raise DalDistError(f"{what}: expected a float N×D array of embeddings, got {type(rows).__name__} "
                           f"{getattr(rows, 'dtype', '')} shape {getattr(rows, 'shape', '?')}")
    if rows.shape[1] != config.in_channels:
        raise DalDistError(f"{what}: embeddings are {rows.shape[1]} wide; model {config.name!r} takes "
                           f"{config.in_channels}")
    labels = np.asarray(labels)
    if labels.shape != (len(rows),) or not np.issubdtype(labels.dtype, np.integer) or not len(rows):
        raise DalDistError(f"{what}: expected one integer label per row ({len(rows)} rows, at least one), got "
                           f"{labels.dtype} shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= config.num_classes:
        raise DalDistError(f"{what}: labels outside [0, {config.num_classes})")


def train_head(model_config: ModelConfig, rows: np.ndarray, labels: np.ndarray, cfg: TrainConfig,
               out_checkpoint: str | os.PathLike, init_checkpoint: str | os.PathLike | None = None) -> TrainResult:
    """Fit a head on embedding rows in this process and write `out_checkpoint`; deterministic per seed."""
    check_rows(rows, labels, model_config, "labeled embeddings")
    if cfg.workers != 1:
        raise DalDistError(f"train.workers={cfg.workers}: a head on cached embeddings trains in one process")
    init_state = warm_start_state(model_config, init_checkpoint) if cfg.warm_start and init_checkpoint else None
    data = {"rows": np.array(rows, dtype=np.float32), "labels": np.array(labels, dtype=np.int64)}  # writable copies
    job = TrainingJob("train", model_config, cfg, fit_head, workers=1, use_gpu=cfg.use_gpu)
    return run_training_job(job, data, init_state, out_checkpoint, executor="local")


def fit_head(model: DALModel, cfg: TrainConfig, data: dict[str, Any], ctx: WorkerContext) -> tuple[Metrics, History]:
    """`cfg.epochs` of seeded mini-batches of cross-entropy over the rows; returns (metrics, history)."""
    torch.manual_seed(cfg.seed * 65_537)
    model.to(ctx.device).train()
    x = torch.from_numpy(data["rows"]).to(ctx.device)
    y = torch.from_numpy(data["labels"]).to(ctx.device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, sorted(cfg.lr_milestones), cfg.lr_gamma)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    history: History = []
    for epoch in range(cfg.epochs):
        loss_sum, correct = 0.0, 0
        for idx in torch.randperm(len(y), generator=order_gen).split(cfg.batch_size):
            idx = idx.to(ctx.device)
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        scheduler.step()
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / len(y), "train_acc": correct / len(y)})
    model.eval()
    metrics: Metrics = {k: v for k, v in history[-1].items() if k != "epoch"}
    metrics["epochs_run"] = len(history)
    return metrics, history


@torch.no_grad()
def evaluate_rows(model: DALModel, rows: np.ndarray, labels: np.ndarray, batch_size: int = 65_536) -> float:
    """Top-1 accuracy of a head on embedding rows, dropout off."""
    check_rows(rows, labels, model.config, "test embeddings")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for s in range(0, len(labels), batch_size):
            pred = model(torch.from_numpy(np.asarray(rows[s:s + batch_size], dtype=np.float32)).to(device)).argmax(1)
            correct += int((pred.cpu().numpy() == np.asarray(labels[s:s + batch_size])).sum())
    finally:
        model.train(was_training)
    return correct / len(labels)
