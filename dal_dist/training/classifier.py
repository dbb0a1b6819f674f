"""Training the task classifier on the labeled set: Ray Train DDP (`TorchTrainer`) or in-process.

The driver's entry point: validate the arrays, hold out a seeded validation split, load the
warm-start weights once, then run the classifier's `TrainingJob` (`fit.fit_classifier`) on the chosen
executor. With `cfg.learning_loss` the model carries a Learning Loss module (Yoo & Kweon 2019).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.models import ModelConfig
from dal_dist.training.checks import check_training_arrays
from dal_dist.training.config import TrainConfig
from dal_dist.training.executor import check_executor, run_training_job
from dal_dist.training.fit import fit_classifier
from dal_dist.training.worker import TrainingJob, TrainResult, warm_start_state


def train(model_config: ModelConfig, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig,
          out_checkpoint: str | os.PathLike, init_checkpoint: str | os.PathLike | None = None,
          eval_images: np.ndarray | None = None, eval_labels: np.ndarray | None = None,
          storage_dir: str | os.PathLike | None = None, executor: str = "ray") -> TrainResult:
    """Train on the labeled set with Ray Train DDP and write `out_checkpoint`; deterministic per seed.

    `executor="local"` runs the same loop in this process (one worker, no Ray): for small labeled
    sets a Ray Train worker group costs 20-30 s to start, far more than the training itself.

    `images` uint8 N×H×W×C and `labels` int64 N, in a fixed order (the result depends on it).
    `init_checkpoint` is used only with `cfg.warm_start` (None then means: first round, from scratch).
    `storage_dir` holds Ray Train's run directory (a temp dir, removed afterwards, when None); on a
    multi-node cluster it must be shared storage, since the checkpoint travels through it.
    """
    check_executor(executor)
    model_config = _with_loss_module(model_config, cfg)
    check_training_arrays(images, labels, model_config, "images", "labels")
    if (eval_images is None) != (eval_labels is None):
        raise DalDistError("eval_images and eval_labels: give both or neither")
    if eval_images is not None:
        check_training_arrays(eval_images, eval_labels, model_config, "eval_images", "eval_labels")
    train_idx, val_idx = validation_split(len(labels), cfg)
    init_state = warm_start_state(model_config, init_checkpoint) if cfg.warm_start and init_checkpoint else None
    labels = np.asarray(labels, dtype=np.int64)
    has_val = len(val_idx) > 0
    data = {
        "images": np.ascontiguousarray(images[train_idx]), "labels": labels[train_idx],
        "val_images": np.ascontiguousarray(images[val_idx]) if has_val else None,
        "val_labels": labels[val_idx] if has_val else None,
        "eval_images": np.ascontiguousarray(eval_images) if eval_images is not None else None,
        "eval_labels": np.asarray(eval_labels, dtype=np.int64) if eval_labels is not None else None,
    }
    job = TrainingJob("train", model_config, cfg, fit_classifier, workers=cfg.workers, use_gpu=cfg.use_gpu)
    return run_training_job(job, data, init_state, out_checkpoint, executor=executor, storage_dir=storage_dir)


def validation_split(n: int, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of the labeled set into (train, validation) indices; both parts keep the caller's order."""
    if cfg.val_fraction == 0:
        return np.arange(n), np.arange(0)
    n_val = max(1, round(cfg.val_fraction * n))
    if n_val >= n:
        raise DalDistError(f"train.val_fraction={cfg.val_fraction} leaves no training images out of {n} labeled")
    perm = np.random.default_rng(cfg.seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _with_loss_module(model_config: ModelConfig, cfg: TrainConfig) -> ModelConfig:
    """The model config with `learning_loss` set when training uses it; a config/flag disagreement is refused."""
    if cfg.learning_loss and not model_config.extra.get("learning_loss"):
        # The loss module is part of the model (and checkpoint) so scoring can emit `pred_loss`.
        model_config = dataclasses.replace(model_config, extra={**model_config.extra, "learning_loss": True})
    if model_config.extra.get("learning_loss") and not cfg.learning_loss:
        raise DalDistError("train.learning_loss is false but the model config has learning_loss: true "
                           "(its loss module would stay untrained); set both or neither")
    return model_config
