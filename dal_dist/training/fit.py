"""The classifier's fit loop, the same in Ray Train workers and in-process; randomness seeded from (seed, rank).

Each worker shards the labeled set with a seeded `DistributedSampler` (`set_epoch` per epoch) and
seeds its own torch RNG, so a run is bit-identical for the same seed, worker count and data.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from dal_dist.models import DALModel, ModelConfig, preprocess
from dal_dist.training.augment import augment_batch
from dal_dist.training.config import TrainConfig
from dal_dist.training.early_stopping import EarlyStopping
from dal_dist.training.evaluation import evaluate
from dal_dist.training.objective import TrainingForward, training_objective
from dal_dist.training.worker import History, Metrics, WorkerContext


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD (with momentum) over all of `model`'s parameters, as `cfg` says."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit_classifier(model: DALModel, cfg: TrainConfig, data: dict[str, Any],
                   ctx: WorkerContext) -> tuple[Metrics, History]:
    """Train `model` in place for `cfg.epochs` (early stopping on val_acc when set); returns (metrics, history).

    `data`: uint8 `images`, int64 `labels` (the training part), optional `val_images`/`val_labels`
    (early stopping) and `eval_images`/`eval_labels` (test accuracy, rank 0).
    """
    from torch.utils.data import DistributedSampler

    torch.manual_seed(cfg.seed * 65_537 + ctx.rank)  # dropout and augmentation differ per rank, fixed per run
    net = ctx.wrap(TrainingForward(model)) if ctx.wrap is not None else TrainingForward(model).to(ctx.device)
    model.train()
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, sorted(cfg.lr_milestones), cfg.lr_gamma)
    sampler = DistributedSampler(range(len(data["labels"])), num_replicas=ctx.world, rank=ctx.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)
    aug_gen = torch.Generator().manual_seed(cfg.seed * 65_537 + ctx.rank + 7)
    history: History = []
    stopper = EarlyStopping(cfg.early_stopping_patience)
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        order = np.fromiter(iter(sampler), dtype=np.int64)
        detach = cfg.ll_stop_grad_epoch is not None and epoch >= cfg.ll_stop_grad_epoch
        sums = train_epoch(net, optimizer, data["images"], data["labels"], order, model.config, cfg, ctx, aug_gen,
                           detach_levels=detach)
        scheduler.step()
        row = _epoch_row(epoch, sums, model.has_loss_module, ctx)
        stop = False
        if data["val_images"] is not None:
            row["val_acc"] = _validation_accuracy(model, data["val_images"], data["val_labels"], ctx)
            stop = stopper.update(epoch + 1, row["val_acc"], model)
        history.append(row)
        if stop:
            break
    return _final_metrics(model, history, stopper, data, ctx), history


def train_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, images: np.ndarray, labels: np.ndarray,
                order: np.ndarray, model_config: ModelConfig, cfg: TrainConfig, ctx: WorkerContext,
                aug_gen: torch.Generator, detach_levels: bool = False) -> torch.Tensor:
    """One pass over this rank's shard in `order`; returns (CE sum, correct, count, ll sum) on the device."""
    per_worker_batch = max(1, math.ceil(cfg.batch_size / ctx.world))
    device = ctx.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for s in range(0, len(order), per_worker_batch):
        idx = order[s:s + per_worker_batch]
        batch = torch.from_numpy(images[idx])
        if cfg.augment != "none":
            batch = augment_batch(batch, cfg.augment == "flip_crop", aug_gen)
        x = preprocess(batch.to(device), model_config)
        y = torch.from_numpy(labels[idx]).to(device)
        logits, pred_loss = net(x, detach_levels=detach_levels)
        loss, ce, ll = training_objective(logits, pred_loss, y, cfg.ll_weight, cfg.ll_margin)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            sums += torch.stack([ce.sum().double(), (logits.argmax(1) == y).sum().double(),
                                 torch.tensor(float(len(idx)), dtype=torch.float64, device=device),
                                 (ll.double() * len(idx)) if ll is not None else sums.new_zeros(())])
    return sums


def _epoch_row(epoch: int, sums: torch.Tensor, has_loss_module: bool, ctx: WorkerContext) -> dict[str, float]:
    """The epoch's history row from the summed counters of every rank."""
    if ctx.world > 1:
        ctx.all_reduce(sums)
    row = {"epoch": epoch + 1, "train_loss": float(sums[0] / sums[2]), "train_acc": float(sums[1] / sums[2])}
    if has_loss_module:
        row["ll_loss"] = float(sums[3] / sums[2])
    return row


def _validation_accuracy(model: DALModel, images: np.ndarray, labels: np.ndarray, ctx: WorkerContext) -> float:
    """Every rank holds the same weights; rank 0's number decides so no rank can disagree."""
    val = torch.tensor([evaluate(model, images, labels, device=ctx.device)], dtype=torch.float64, device=ctx.device)
    if ctx.world > 1:
        ctx.broadcast(val)
    return float(val[0])


def _final_metrics(model: DALModel, history: History, stopper: EarlyStopping, data: dict[str, Any],
                   ctx: WorkerContext) -> Metrics:
    """Last epoch's numbers; with early stopping, restore the best epoch's weights; test accuracy on rank 0."""
    metrics: Metrics = {k: v for k, v in history[-1].items() if k != "epoch"}
    metrics["epochs_run"] = len(history)
    if stopper.best_state is not None:  # early stopping keeps the best validation epoch's weights
        model.load_state_dict(stopper.best_state)
        metrics["val_acc"], metrics["best_epoch"] = stopper.best_val, stopper.best_epoch
    if ctx.rank == 0 and data["eval_images"] is not None:
        metrics["test_acc"] = evaluate(model, data["eval_images"], data["eval_labels"], device=ctx.device)
    model.eval()
    return metrics
