"""Training on the labeled set through Ray Train (`TorchTrainer`, DDP), with optional Learning Loss.

Determinism is the contract: the driver's crash/resume guarantee (same seed → same selected ids)
needs a round's checkpoint to be bit-identical for the same seed, worker count and data. So the
labeled arrays go to the workers through the object store (`ray.put`, refs in `train_loop_config`)
instead of Ray Data, whose streaming shuffles and block order are not reproducible; each worker
shards them with a seeded `DistributedSampler` (`set_epoch` per epoch) and seeds its own torch RNG.
Labeled sets are small next to the pool (thousands of images), so shipping them whole is cheap.

Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019): total loss = mean CE +
λ · margin ranking loss between the loss module's predictions and the per-sample CE; after epoch E
the feature maps are detached, so the module stops shaping the backbone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.learning_loss import loss_prediction_loss
from dal_dist.models import DALModel, ModelConfig, build_model, load_checkpoint, preprocess, save_checkpoint

CHECKPOINT_FILE = "model.pt"
logger = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Per-round training hyper-parameters; embedded in the driver's YAML, so unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=1, description="global batch: split evenly over the workers")
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(0.0, ge=0)
    lr_milestones: list[int] = Field(default_factory=list, description="epochs at which lr *= lr_gamma")
    lr_gamma: float = Field(0.1, gt=0)
    warm_start: bool = Field(False, description="start from the previous round's checkpoint, "
                                                "else from scratch with the model's seed")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="labeled fraction held out for validation")
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without a better "
                                                "val_acc before stopping; the best epoch is kept")
    learning_loss: bool = False
    ll_weight: float = Field(1.0, ge=0, description="λ (Yoo & Kweon 2019)")
    ll_margin: float = Field(1.0, ge=0, description="ξ (Yoo & Kweon 2019)")
    ll_stop_grad_epoch: int | None = Field(None, ge=0, description="E: detach the feature maps fed to "
                                           "the loss module after E epochs (paper: 120 of 200)")
    augment: Literal["none", "crop", "flip_crop"] = Field(
        "none", description="random shift (pad + crop) and horizontal flip, seeded per worker")
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    seed: int = Field(0, ge=0, description="shuffling, dropout and the validation split")

    @model_validator(mode="after")
    def _patience_needs_validation(self) -> "TrainConfig":
        if self.early_stopping_patience is not None and self.val_fraction == 0:
            raise ValueError("early_stopping_patience needs val_fraction > 0 (it watches val_acc)")
        return self


@dataclass
class TrainResult:
    """What one round's training produced: the checkpoint file and its metrics."""

    checkpoint: Path
    metrics: dict[str, float]  # train_loss, train_acc, epochs_run, seconds; val_acc, test_acc, ll_loss if any
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch run


class TrainingForward(nn.Module):
    """The one module DDP wraps: logits and (with a loss module) predicted losses from one backbone pass."""

    def __init__(self, model: DALModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, detach_levels: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        f, levels = self.model.feature_levels(x)
        logits = self.model.head(f)
        if not self.model.has_loss_module:
            return logits, None
        if detach_levels:  # Yoo & Kweon 2019: after epoch E the ranking loss no longer shapes the backbone
            levels = [h.detach() for h in levels]
        return logits, self.model.loss_module(levels)


def training_objective(logits: torch.Tensor, pred_loss: torch.Tensor | None, labels: torch.Tensor,
                       ll_weight: float = 1.0, ll_margin: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean CE (+ λ · ranking loss on per-sample CE, Yoo & Kweon 2019); returns (total, per-sample CE, ll)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    if pred_loss is None:
        return ce.mean(), ce, None
    ll = loss_prediction_loss(pred_loss, ce, margin=ll_margin)
    return ce.mean() + ll_weight * ll, ce, ll


@torch.no_grad()
def evaluate(checkpoint_or_model: DALModel | str | os.PathLike, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 512, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy with dropout off; plain torch, so the driver can call it without Ray."""
    model = checkpoint_or_model if isinstance(checkpoint_or_model, nn.Module) \
        else load_checkpoint(checkpoint_or_model)
    _check_arrays(images, labels, model.config, "images", "labels")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for start in range(0, len(labels), batch_size):
            batch = torch.from_numpy(np.array(images[start:start + batch_size]))  # copy: may be read-only
            x = preprocess(batch.to(device), model.config)
            pred = model(x).argmax(dim=1).cpu()
            correct += int((pred == torch.from_numpy(np.asarray(labels[start:start + batch_size]))).sum())
    finally:
        model.train(was_training)
    return correct / len(labels)


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
    if cfg.learning_loss and not model_config.extra.get("learning_loss"):
        # The loss module is part of the model (and checkpoint) so scoring can emit `pred_loss`.
        model_config = dataclasses.replace(model_config, extra={**model_config.extra, "learning_loss": True})
    if model_config.extra.get("learning_loss") and not cfg.learning_loss:
        raise DalDistError("train.learning_loss is false but the model config has learning_loss: true "
                           "(its loss module would stay untrained); set both or neither")
    _check_arrays(images, labels, model_config, "images", "labels")
    if (eval_images is None) != (eval_labels is None):
        raise DalDistError("eval_images and eval_labels: give both or neither")
    if eval_images is not None:
        _check_arrays(eval_images, eval_labels, model_config, "eval_images", "eval_labels")
    train_idx, val_idx = _validation_split(len(labels), cfg)
    init_state = _initial_state(model_config, init_checkpoint) if cfg.warm_start and init_checkpoint else None

    labels = np.asarray(labels, dtype=np.int64)
    if executor == "local":
        return _train_local(model_config, cfg, images, labels, train_idx, val_idx, eval_images, eval_labels,
                            init_state, Path(out_checkpoint))
    if executor != "ray":
        raise DalDistError(f"executor must be 'ray' or 'local', got {executor!r}")
    import ray  # the local executor needs no Ray at all

    _warn_if_cluster_too_small(cfg)
    refs = {
        "images": ray.put(np.ascontiguousarray(images[train_idx])),
        "labels": ray.put(labels[train_idx]),
        "val_images": ray.put(np.ascontiguousarray(images[val_idx])) if len(val_idx) else None,
        "val_labels": ray.put(labels[val_idx]) if len(val_idx) else None,
        "eval_images": ray.put(np.ascontiguousarray(eval_images)) if eval_images is not None else None,
        "eval_labels": ray.put(np.asarray(eval_labels, dtype=np.int64)) if eval_labels is not None else None,
        "init_state": ray.put(init_state) if init_state is not None else None,
    }
    loop_config = {"model_config": model_config.to_json(), "train_config": cfg.model_dump(), "refs": refs}

    return fit_on_ray_train(_train_loop, loop_config, cfg.workers, cfg.use_gpu, out_checkpoint, storage_dir, "train")


def fit_on_ray_train(loop: Any, loop_config: dict[str, Any], workers: int, use_gpu: bool,
                     out_checkpoint: str | os.PathLike, storage_dir: str | os.PathLike | None,
                     name: str) -> TrainResult:
    """Run a Ray Train loop (`TorchTrainer`) and copy rank 0's CHECKPOINT_FILE to `out_checkpoint` atomically.

    The loop reports once, at its end, with a checkpoint directory holding CHECKPOINT_FILE and returns
    {"metrics", "history"}; `storage_dir` (a temp dir, removed afterwards, when None) holds Ray Train's
    run directory and must be shared storage on a multi-node cluster.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    own_storage = storage_dir is None
    storage = Path(tempfile.mkdtemp(prefix=f"dal-dist-{name}-")) if own_storage else Path(storage_dir).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        trainer = TorchTrainer(
            loop, train_loop_config=loop_config,
            scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu),
            run_config=_run_config(storage, f"{name}-{Path(out_checkpoint).stem}-{uuid.uuid4().hex[:8]}"),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise DalDistError(f"{name}: training finished without a checkpoint (run directory {result.path})")
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


def _train_local(model_config: ModelConfig, cfg: TrainConfig, images: np.ndarray, labels: np.ndarray,
                 train_idx: np.ndarray, val_idx: np.ndarray, eval_images: np.ndarray | None,
                 eval_labels: np.ndarray | None, init_state: dict[str, torch.Tensor] | None,
                 out: Path) -> TrainResult:
    """The in-process path of `train`: one worker, this process's device, same loop and seeds."""
    if cfg.workers != 1:
        raise DalDistError(f"train.workers={cfg.workers}: the local executor trains in one process "
                           f"(use executor ray for data-parallel training)")
    device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
    if cfg.use_gpu and device.type != "cuda":
        raise DalDistError("train.use_gpu is true but this process sees no CUDA device")
    start = time.monotonic()
    has_val = len(val_idx) > 0
    model, metrics, history = _fit(
        model_config, cfg, np.ascontiguousarray(images[train_idx]), labels[train_idx],
        np.ascontiguousarray(images[val_idx]) if has_val else None, labels[val_idx] if has_val else None,
        np.ascontiguousarray(eval_images) if eval_images is not None else None,
        np.asarray(eval_labels, dtype=np.int64) if eval_labels is not None else None,
        init_state, device=device)
    save_checkpoint(model.cpu(), out, extra={"train": cfg.model_dump(), "metrics": metrics})
    metrics = {**metrics, "seconds": time.monotonic() - start}
    return TrainResult(checkpoint=out, metrics=metrics, history=history)


def _warn_if_cluster_too_small(cfg: TrainConfig) -> None:
    """A worker group larger than the cluster waits for resources forever (unless an autoscaler adds them)."""
    import ray

    if not ray.is_initialized():
        return
    have = ray.cluster_resources()
    need_cpu, need_gpu = cfg.workers, cfg.workers if cfg.use_gpu else 0
    if have.get("CPU", 0) < need_cpu or have.get("GPU", 0) < need_gpu:
        logger.warning("train: %d workers%s requested but the cluster has %s CPU / %s GPU now; "
                       "training waits until an autoscaler adds nodes", cfg.workers,
                       " with a GPU each" if cfg.use_gpu else "", have.get("CPU", 0), have.get("GPU", 0))


def _copy_atomic(src: Path, dst: Path) -> None:
    from dal_dist.atomic import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _run_config(storage: Path, name: str) -> Any:
    import ray.train

    kwargs: dict[str, Any] = {"name": name, "storage_path": str(storage)}
    if hasattr(ray.train, "LoggingConfig"):  # Train V2: keep the controller's INFO lines off the console
        kwargs["logging_config"] = ray.train.LoggingConfig(log_level="WARNING")
    return ray.train.RunConfig(**kwargs)


def _train_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Runs in every Ray Train worker: fetch the arrays, fit, report rank 0's checkpoint once."""
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    cfg = TrainConfig.model_validate(config["train_config"])
    model_config = ModelConfig.from_json(config["model_config"])
    refs = config["refs"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()

    def get(name: str) -> Any:
        return ray.get(refs[name]) if refs[name] is not None else None

    model, metrics, history = _fit(
        model_config, cfg, get("images"), get("labels"), get("val_images"), get("val_labels"),
        get("eval_images"), get("eval_labels"), get("init_state"), rank=rank, world=world,
        device=ray.train.torch.get_device(), wrap=ray.train.torch.prepare_model,
        all_reduce=dist.all_reduce, broadcast=lambda t: dist.broadcast(t, src=0))
    # One report, at the end: each `ray.train.report` is a barrier that waits for the controller's
    # poll (seconds), which would dominate the many short trainings of small labeled sets.
    with tempfile.TemporaryDirectory(prefix="dal-dist-ckpt-") as tmp:
        checkpoint = None
        if rank == 0:
            save_checkpoint(model, Path(tmp) / CHECKPOINT_FILE,
                            extra={"train": cfg.model_dump(), "metrics": metrics})
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
    return {"metrics": metrics, "history": history}


def _fit(model_config: ModelConfig, cfg: TrainConfig, images: np.ndarray, labels: np.ndarray,
         val_images: np.ndarray | None, val_labels: np.ndarray | None,
         eval_images: np.ndarray | None, eval_labels: np.ndarray | None,
         init_state: dict[str, torch.Tensor] | None, *, rank: int = 0, world: int = 1,
         device: torch.device | None = None, wrap: Any = None, all_reduce: Any = None, broadcast: Any = None
         ) -> tuple[DALModel, dict[str, float], list[dict[str, float]]]:
    """The training loop shared by Ray Train workers and the in-process path; randomness seeded from (seed, rank)."""
    from torch.utils.data import DistributedSampler

    device = device or torch.device("cpu")
    if cfg.use_gpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed * 65_537 + rank)  # dropout and augmentation differ per rank, fixed per run

    model = build_model(model_config)
    if init_state is not None:
        model.load_state_dict(init_state)
    net = wrap(TrainingForward(model)) if wrap is not None else TrainingForward(model).to(device)
    model.train()
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, sorted(cfg.lr_milestones), cfg.lr_gamma)
    sampler = DistributedSampler(range(len(labels)), num_replicas=world, rank=rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)
    per_worker_batch = max(1, math.ceil(cfg.batch_size / world))
    aug_gen = torch.Generator().manual_seed(cfg.seed * 65_537 + rank + 7)

    history: list[dict[str, float]] = []
    stopper = EarlyStopping(cfg.early_stopping_patience)
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        order = np.fromiter(iter(sampler), dtype=np.int64)
        detach = cfg.ll_stop_grad_epoch is not None and epoch >= cfg.ll_stop_grad_epoch
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # ce sum, correct, count, ll sum
        for s in range(0, len(order), per_worker_batch):
            idx = order[s:s + per_worker_batch]
            batch = torch.from_numpy(images[idx])
            if cfg.augment != "none":
                batch = augment_batch(batch, cfg.augment == "flip_crop", aug_gen)
            x = preprocess(batch.to(device), model_config)
            y = torch.from_numpy(labels[idx]).to(device)
            logits, pred_loss = net(x, detach_levels=detach)
            loss, ce, ll = training_objective(logits, pred_loss, y, cfg.ll_weight, cfg.ll_margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                sums += torch.stack([ce.sum().double(), (logits.argmax(1) == y).sum().double(),
                                     torch.tensor(float(len(idx)), dtype=torch.float64, device=device),
                                     (ll.double() * len(idx)) if ll is not None else sums.new_zeros(())])
        scheduler.step()
        if world > 1:
            all_reduce(sums)
        row = {"epoch": epoch + 1, "train_loss": float(sums[0] / sums[2]), "train_acc": float(sums[1] / sums[2])}
        if model.has_loss_module:
            row["ll_loss"] = float(sums[3] / sums[2])
        stop = False
        if val_images is not None:
            # Every rank holds the same weights; rank 0's number decides so no rank can disagree.
            val = torch.tensor([evaluate(model, val_images, val_labels, device=device)],
                               dtype=torch.float64, device=device)
            if world > 1:
                broadcast(val)
            row["val_acc"] = float(val[0])
            stop = stopper.update(epoch + 1, row["val_acc"], model)
        history.append(row)
        if stop:
            break

    metrics: dict[str, float] = {k: v for k, v in history[-1].items() if k != "epoch"}
    metrics["epochs_run"] = len(history)
    if stopper.best_state is not None:  # early stopping keeps the best validation epoch's weights
        model.load_state_dict(stopper.best_state)
        metrics["val_acc"], metrics["best_epoch"] = stopper.best_val, stopper.best_epoch
    if rank == 0 and eval_images is not None:
        metrics["test_acc"] = evaluate(model, eval_images, eval_labels, device=device)
    model.eval()
    return model, metrics, history


class EarlyStopping:
    """Stop after `patience` epochs without a better val_acc, keeping the best epoch's weights (None: never)."""

    def __init__(self, patience: int | None):
        self.patience = patience
        self.best_val, self.best_epoch, self.stale = -1.0, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_acc: float, model: nn.Module) -> bool:
        """Record one epoch's validation accuracy; True when training should stop."""
        if val_acc > self.best_val:
            self.best_val, self.best_epoch, self.stale = val_acc, epoch, 0
            if self.patience is not None:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def augment_batch(batch: torch.Tensor, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random shift by up to 1/8 of the side (zero pad + crop) and optional horizontal flip, on uint8 N×H×W×C."""
    n, h, w, _ = batch.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(batch.permute(0, 3, 1, 2), (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    out = torch.empty_like(batch)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(1) if flips[i] else crop
    return out


def _validation_split(n: int, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of the labeled set; both parts keep the caller's order."""
    if cfg.val_fraction == 0:
        return np.arange(n), np.arange(0)
    n_val = max(1, round(cfg.val_fraction * n))
    if n_val >= n:
        raise DalDistError(f"train.val_fraction={cfg.val_fraction} leaves no training images out of {n} labeled")
    perm = np.random.default_rng(cfg.seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _initial_state(model_config: ModelConfig, init_checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load the warm-start weights once in the driver and check they fit this round's model."""
    prev = load_checkpoint(init_checkpoint, expect_name=model_config.name)
    state = prev.state_dict()
    try:
        build_model(model_config).load_state_dict(state)
    except RuntimeError as e:
        raise DalDistError(f"init_checkpoint {init_checkpoint}: its weights do not fit model config "
                           f"{model_config.name!r} ({str(e).splitlines()[0]})") from e
    return {k: v.detach().cpu() for k, v in state.items()}


def _check_arrays(images: Any, labels: Any, config: ModelConfig, images_name: str, labels_name: str) -> None:
    """Validate once at the boundary: shapes, dtypes, label range, channels the model can take."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{type(images).__name__} {getattr(images, 'dtype', '')} shape {getattr(images, 'shape', '?')}"
        raise DalDistError(f"{images_name}: expected a uint8 numpy array N×H×W×C, got {got}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DalDistError(f"{labels_name}: expected a 1-D integer array, got {labels.dtype} shape {labels.shape}")
    if len(labels) == 0:
        raise DalDistError(f"{labels_name}: the labeled set is empty; training needs at least one labeled image")
    if len(images) != len(labels):
        raise DalDistError(f"{images_name} and {labels_name}: length mismatch ({len(images)} images, "
                           f"{len(labels)} labels)")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= config.num_classes:
        bad = lo if lo < 0 else hi
        raise DalDistError(f"{labels_name}: label {bad} outside [0, {config.num_classes}) "
                           f"(model {config.name!r} has num_classes={config.num_classes})")
    c = images.shape[3]
    if c != config.in_channels and c != 1 and config.in_channels != 1:
        raise DalDistError(f"{images_name}: images have {c} channels (shape {images.shape}); model "
                           f"{config.name!r} expects {config.in_channels} (or 1, which is repeated)")

