"""SRAAL: State-Relabeling Adversarial Active Learning (Zhang et al., CVPR 2020, arXiv:2004.04943).

The model (`SRAALModel`, registered as `"sraal"` in `dal_dist.models.registry`) is one network:

  * a shared CNN encoder (`features`) with two FC heads: the *unsupervised image reconstructor*, a VAE
    posterior q(z_u|x) whose sample feeds a deconvolutional decoder (trained on labeled and unlabeled
    images), and the *supervised target learner*, a latent z_s feeding a dropout classifier (trained on
    labeled images; it is also the task model that `dal-dist` evaluates and MC-dropout samples);
  * the *unified representation* `embed(f) = [mu_u, z_s]` (VAE mean: deterministic for scoring);
  * a *state discriminator* on that representation. Here it outputs the probability of being
    **unlabeled** (paper: of being labeled; the two are complements), so `state_score` is "higher =
    label first", like every other score column.

State relabeling: the discriminator's target for a labeled image is 0, and for an unlabeled image the
online uncertainty indicator OUI(x) ∈ [0, 1] of the target learner's prediction replaces the fixed
state 1 (VAAL's target), so confidently predicted unlabeled images count as "nearly labeled".

OUI (paper §3.3, "online uncertainty indicator"; we implement the variance-ratio form): for the class
probability vector P (C classes) with maximum p = max(P) and variance V(P) (population variance over
the C entries), the smallest variance any probability vector with that maximum can have is reached
when the other C−1 entries are equal, V_min(p) = (p − 1/C)² / (C − 1). Then

    OUI(x) = 1 − p · V_min(p) / V(P)

V_min/V ∈ (0, 1] measures how evenly the remaining mass is spread and p the confidence, so a one-hot
prediction scores 0 and a near-uniform one 1 − 1/C; at exactly uniform P (0/0) the ratio is taken as
1 (P *is* the minimum-variance vector), giving 1 − 1/C, the supremum along that family.

Losses (pure functions below): generator L_G = λ_r·L_vae(labeled + unlabeled) + λ_c·CE(labeled) +
λ_a·L_adv, where L_adv asks the discriminator to call every image labeled (VAAL, Sinha et al. 2019);
discriminator L_D = BCE(D(r_l), 0) + BCE(D(r_u), OUI(x_u)). Generator and discriminator steps
alternate, as in the paper. Selection: top-K unlabeled images by `state_score` (scoring column `sraal`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models import DALModel, ModelConfig, preprocess
from dal_dist.pool import read_images
from dal_dist.training import (TrainingJob, TrainResult, WorkerContext, check_executor, check_training_arrays,
                               run_training_job, warm_start_state)


# --------------------------------------------------------------------------------------------- model
class SRAALDecoder(nn.Module):
    """VAE decoder: z_u → image in the model's normalised input space (mirror of the encoder trunk)."""

    def __init__(self, latent: int, channels: int, side: int):
        super().__init__()
        self.side = side
        self.fc = nn.Linear(latent, 64 * side * side)
        self.up1 = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(z)).view(-1, 64, self.side, self.side)
        return self.up2(F.relu(self.up1(h)))


class StateDiscriminator(nn.Module):
    """MLP on the unified representation → logit of P(unlabeled) (VAAL's discriminator, 2 hidden layers)."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        return self.net(rep).squeeze(1)


@dataclasses.dataclass
class SRAALOutputs:
    """Everything one training pass needs from a batch: classifier logits, VAE terms, representation."""

    logits: torch.Tensor  # B×C, dropout active in train mode
    mu: torch.Tensor  # B×Du
    logvar: torch.Tensor  # B×Du
    recon: torch.Tensor  # B×C×S×S, normalised input space
    target_latent: torch.Tensor  # B×Ds, no dropout
    rep: torch.Tensor  # B×(Du+Ds) = [mu, target_latent]


class SRAALModel(DALModel):
    """Shared encoder → (VAE reconstructor, target learner) → unified representation → state discriminator.

    Config extras: `vae_latent` (32), `target_latent` (128), `disc_hidden` (256). `image_size` must be
    a multiple of 4 (two stride-2 convolutions, mirrored by the decoder).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.image_size < 8 or config.image_size % 4:
            raise DalDistError(f"model sraal: image_size must be a multiple of 4 and >= 8 (two stride-2 "
                               f"convolutions mirrored by the decoder), got {config.image_size}")
        self.config = config
        c, s = config.in_channels, config.image_size
        self.vae_dim = int(config.extra.get("vae_latent", 32))
        self.target_dim = int(config.extra.get("target_latent", 128))
        self.conv1 = nn.Conv2d(c, 32, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 4, stride=2, padding=1)
        side = s // 4
        flat = 64 * side * side
        # Unsupervised image reconstructor: q(z_u | x) = N(mu, exp(logvar)).
        self.fc_mu = nn.Linear(flat, self.vae_dim)
        self.fc_logvar = nn.Linear(flat, self.vae_dim)
        self.decoder = SRAALDecoder(self.vae_dim, c, side)
        # Supervised target learner: z_s = relu(fc_target(f)); logits = fc_cls(dropout(z_s)).
        self.drop1 = nn.Dropout(0.25)
        self.fc_target = nn.Linear(flat, self.target_dim)
        self.drop2 = nn.Dropout(config.dropout)
        self.fc_cls = nn.Linear(self.target_dim, config.num_classes)
        self.discriminator = StateDiscriminator(self.vae_dim + self.target_dim,
                                                int(config.extra.get("disc_hidden", 256)))
        self.level_channels = (32, 64)
        self.embed_dim = self.vae_dim + self.target_dim

    def feature_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h1 = F.relu(self.conv1(x))
        h2 = F.relu(self.conv2(h1))
        return torch.flatten(h2, 1), [h1, h2]

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """Target learner's logits; all dropout lives here, so MC-dropout acquisitions work unchanged."""
        return self.fc_cls(self.drop2(F.relu(self.fc_target(self.drop1(f)))))

    def target_latent(self, f: torch.Tensor) -> torch.Tensor:
        """z_s, the target learner's latent (dropout off)."""
        return F.relu(self.fc_target(f))

    def posterior(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z_u | x) as (mu, logvar)."""
        return self.fc_mu(f), self.fc_logvar(f)

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        """Unified representation [mu_u, z_s]: the discriminator's input, deterministic."""
        return torch.cat([self.fc_mu(f), self.target_latent(f)], dim=1)

    def state_score(self, f: torch.Tensor) -> torch.Tensor:
        """P(unlabeled) predicted by the state discriminator, N values in [0, 1]; higher = label first."""
        return torch.sigmoid(self.discriminator(self.embed(f)).float())

    def sraal_forward(self, x: torch.Tensor) -> SRAALOutputs:
        """One encoder pass → logits, VAE sample reconstruction (reparameterised), representation."""
        f = self.features(x)
        mu, logvar = self.posterior(f)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        t = self.target_latent(f)
        return SRAALOutputs(logits=self.head(f), mu=mu, logvar=logvar, recon=self.decoder(z),
                            target_latent=t, rep=torch.cat([mu, t], dim=1))

    def generator_parameters(self) -> list[nn.Parameter]:
        """Everything but the discriminator (what the generator optimizer steps)."""
        return [p for n, p in self.named_parameters() if not n.startswith("discriminator.")]


# -------------------------------------------------------------------------------------------- losses
def online_uncertainty_indicator(probs: torch.Tensor) -> torch.Tensor:
    """OUI(x) = 1 − max(P)·V_min/V(P) ∈ [0, 1] per row of N×C probabilities (Zhang et al. 2020, §3.3).

    V(P) is the population variance of the row, V_min = (max(P) − 1/C)²/(C − 1) the least variance of a
    probability vector with that maximum (the other entries equal). One-hot → 0; uniform → 1 − 1/C.
    """
    probs = probs.float()
    c = probs.shape[-1]
    if c < 2:
        raise DalDistError(f"OUI needs at least 2 classes, got probabilities of shape {tuple(probs.shape)}")
    pmax = probs.max(dim=-1).values
    var = probs.var(dim=-1, unbiased=False)
    vmin = (pmax - 1.0 / c) ** 2 / (c - 1)
    # Near-uniform rows make 0/0: V ≥ V_min always holds, so the ratio is 1 when both vanish.
    ratio = torch.where(var > 1e-12, vmin / var.clamp_min(1e-12), torch.ones_like(var)).clamp(0.0, 1.0)
    return (1.0 - pmax * ratio).clamp(0.0, 1.0)


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0) -> torch.Tensor:
    """(Σ squared error + β·KL(q(z|x) ‖ N(0, I))) / (batch · pixels): VAAL's objective, scaled to ~1."""
    sse = (recon - x).pow(2).sum()
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (sse + beta * kl) / x.numel()


def target_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Supervised target learner: mean cross-entropy on labeled images."""
    return F.cross_entropy(logits, labels)


def discriminator_loss(logit_labeled: torch.Tensor, logit_unlabeled: torch.Tensor,
                       oui_unlabeled: torch.Tensor) -> torch.Tensor:
    """State relabeling: BCE with target 0 for labeled and OUI(x) (not 1) for unlabeled images."""
    return (F.binary_cross_entropy_with_logits(logit_labeled, torch.zeros_like(logit_labeled))
            + F.binary_cross_entropy_with_logits(logit_unlabeled, oui_unlabeled.to(logit_unlabeled.dtype)))


def adversarial_loss(logit_labeled: torch.Tensor, logit_unlabeled: torch.Tensor) -> torch.Tensor:
    """Generator's side of the game: make the discriminator call every image labeled (target 0)."""
    return (F.binary_cross_entropy_with_logits(logit_labeled, torch.zeros_like(logit_labeled))
            + F.binary_cross_entropy_with_logits(logit_unlabeled, torch.zeros_like(logit_unlabeled)))


# ------------------------------------------------------------------------------------------ training
class SRAALConfig(BaseModel):
    """Per-round SRAAL hyper-parameters (paper/VAAL defaults: Adam 5e-4, λ's 1); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, ge=1, description="generator + discriminator iterations")
    batch_size: int = Field(64, ge=1, description="labeled and unlabeled images per step (each)")
    lr: float = Field(5e-4, gt=0, description="generator (encoder, VAE, target learner) Adam lr")
    disc_lr: float = Field(5e-4, gt=0, description="state discriminator Adam lr")
    recon_weight: float = Field(1.0, ge=0, description="λ of the VAE (reconstruction + KL) loss")
    ce_weight: float = Field(1.0, ge=0, description="λ of the target learner's cross-entropy")
    adv_weight: float = Field(1.0, ge=0, description="λ of the generator's adversarial loss")
    beta: float = Field(1.0, ge=0, description="KL weight inside the VAE loss")
    unlabeled_sample: int = Field(10_000, ge=1, description="unlabeled images drawn per round "
                                  "(seeded), so a large pool is never loaded whole")
    log_every: int = Field(0, ge=0, description="history row every N steps (0: steps // 50)")
    use_gpu: bool = False
    seed: int = Field(0, ge=0, description="batch order, dropout, VAE noise, unlabeled sample")


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    """Endless seeded epochs over range(n): a fresh permutation each time the previous one runs out."""
    while True:
        perm = rng.permutation(n)
        for s in range(0, n, batch_size):
            yield perm[s:s + batch_size]


STEP_KEYS = ("vae_loss", "ce_loss", "adv_loss", "disc_loss", "oui_mean", "train_acc")


def train_sraal_step(model: SRAALModel, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                     x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, cfg: SRAALConfig) -> torch.Tensor:
    """One generator update then one discriminator update; returns the STEP_KEYS values (float64, on device)."""
    out_l, out_u = model.sraal_forward(x_l), model.sraal_forward(x_u)
    with torch.no_grad():  # OUI from the target learner as it is now, before this step's update
        oui = online_uncertainty_indicator(torch.softmax(model.fc_cls(out_u.target_latent).float(), -1))
    # Generator step (encoder, both heads, decoder): the discriminator's weights are not stepped.
    l_vae = vae_loss(out_l.recon, x_l, out_l.mu, out_l.logvar, cfg.beta) \
        + vae_loss(out_u.recon, x_u, out_u.mu, out_u.logvar, cfg.beta)
    l_ce = target_loss(out_l.logits, y_l)
    l_adv = adversarial_loss(model.discriminator(out_l.rep), model.discriminator(out_u.rep))
    loss_g = cfg.recon_weight * l_vae + cfg.ce_weight * l_ce + cfg.adv_weight * l_adv
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    # Discriminator step on the (detached) representations, unlabeled states relabeled by OUI.
    l_d = discriminator_loss(model.discriminator(out_l.rep.detach()), model.discriminator(out_u.rep.detach()), oui)
    opt_d.zero_grad(set_to_none=True)
    l_d.backward()
    opt_d.step()
    with torch.no_grad():
        acc = (out_l.logits.argmax(1) == y_l).float().mean()
        return torch.stack([v.detach().double() for v in (l_vae, l_ce, l_adv, l_d, oui.mean(), acc)])


def fit_sraal(model: SRAALModel, labeled_x: np.ndarray, labeled_y: np.ndarray, unlabeled_x: np.ndarray,
              cfg: SRAALConfig, device: torch.device | str | None = None) -> dict[str, Any]:
    """Train generator and discriminator in alternation, in this process; deterministic per `cfg.seed`.

    Arrays: uint8 N×H×W×C images, int labels. Returns {"metrics": {...}, "history": [...]}; metrics
    include `disc_auc`, the discriminator's ROC-AUC for unlabeled-vs-labeled on the training images.
    """
    check_training_arrays(labeled_x, labeled_y, model.config, "labeled_x", "labeled_y")
    _check_unlabeled(unlabeled_x)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    mc = model.config
    labeled_y = np.asarray(labeled_y, dtype=np.int64)
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=cfg.lr)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=cfg.disc_lr)
    rng = np.random.default_rng(cfg.seed)
    lab_batches = _batches(len(labeled_y), cfg.batch_size, rng)
    unl_batches = _batches(len(unlabeled_x), cfg.batch_size, rng)
    every = cfg.log_every or max(1, cfg.steps // 50)
    window = torch.zeros(len(STEP_KEYS), dtype=torch.float64, device=device)  # on device: no per-step sync
    n_window = 0
    history: list[dict[str, float]] = []
    start = time.monotonic()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        for step in range(cfg.steps):
            li, ui = next(lab_batches), next(unl_batches)
            x_l = preprocess(torch.from_numpy(labeled_x[li]).to(device), mc)
            y_l = torch.from_numpy(labeled_y[li]).to(device)
            x_u = preprocess(torch.from_numpy(unlabeled_x[ui]).to(device), mc)
            window += train_sraal_step(model, opt_g, opt_d, x_l, y_l, x_u, cfg)
            n_window += 1
            if (step + 1) % every == 0 or step + 1 == cfg.steps:
                history.append({"step": step + 1, **dict(zip(STEP_KEYS, (window / n_window).tolist()))})
                window.zero_()
                n_window = 0
    model.eval()
    metrics: dict[str, float] = {k: v for k, v in history[-1].items() if k != "step"}
    metrics["steps"] = cfg.steps
    metrics["disc_auc"] = discriminator_auc(model, labeled_x, unlabeled_x[:2000], device=device)
    metrics["fit_seconds"] = time.monotonic() - start
    return {"metrics": metrics, "history": history}


@torch.no_grad()
def state_scores(model: SRAALModel, images: np.ndarray, batch_size: int = 512,
                 device: torch.device | str | None = None) -> np.ndarray:
    """`state_score` of uint8 N×H×W×C images (eval mode), float32 N."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model.state_score(model.features(preprocess(torch.from_numpy(np.array(images[s:s + batch_size]))
                                                           .to(device), model.config))).cpu()
               for s in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


def discriminator_auc(model: SRAALModel, labeled_x: np.ndarray, unlabeled_x: np.ndarray,
                      device: torch.device | str | None = None) -> float:
    """ROC-AUC of `state_score` for unlabeled (positive) vs labeled images: 0.5 = chance (Mann–Whitney U)."""
    s_l, s_u = state_scores(model, labeled_x, device=device), state_scores(model, unlabeled_x, device=device)
    if not len(s_l) or not len(s_u):
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([s_u, s_l]))  # average ranks: ties count one half
    u = ranks[:len(s_u)].sum() - len(s_u) * (len(s_u) + 1) / 2
    return float(u / (len(s_u) * len(s_l)))


# --------------------------------------------------------------------------------------- training job
def train_sraal_selector(model_config: ModelConfig, labeled_x: np.ndarray, labeled_y: np.ndarray,
                         unlabeled_x: np.ndarray, cfg: SRAALConfig, out_checkpoint: str | os.PathLike,
                         init_checkpoint: str | os.PathLike | None = None,
                         storage_dir: str | os.PathLike | None = None, executor: str = "ray") -> TrainResult:
    """Run `fit_sraal` in one Ray Train worker (`TorchTrainer`, GPU with `cfg.use_gpu`); write the checkpoint.

    One worker: the alternating generator/discriminator updates are not DDP-wrapped (the sampler's
    data, a labeled set plus `unlabeled_sample` images, fits one device). `executor="local"` runs the
    same fit in this process (as `training.train` does: a Ray Train worker group costs tens of seconds
    to start); both give the same weights for a seed on CPU.
    """
    if model_config.name != "sraal":
        raise DalDistError(f"train_sraal_selector: model config name is {model_config.name!r}; expected 'sraal'")
    check_executor(executor)
    check_training_arrays(labeled_x, labeled_y, model_config, "labeled_x", "labeled_y")
    _check_unlabeled(unlabeled_x)
    init_state = warm_start_state(model_config, init_checkpoint) if init_checkpoint is not None else None
    data = {"labeled_x": np.ascontiguousarray(labeled_x), "labeled_y": np.asarray(labeled_y, dtype=np.int64),
            "unlabeled_x": np.ascontiguousarray(unlabeled_x)}
    job = TrainingJob("sraal", model_config, cfg, _fit_job, workers=1, use_gpu=cfg.use_gpu)
    return run_training_job(job, data, init_state, out_checkpoint, executor=executor, storage_dir=storage_dir)


def _fit_job(model: SRAALModel, cfg: SRAALConfig, data: dict[str, Any],
             ctx: WorkerContext) -> tuple[dict[str, float], list[dict[str, float]]]:
    """`fit_sraal` as the training skeleton's fit function (one worker: only the device matters)."""
    out = fit_sraal(model, data["labeled_x"], data["labeled_y"], data["unlabeled_x"], cfg, device=ctx.device)
    return out["metrics"], out["history"]


def _check_unlabeled(unlabeled_x: Any) -> None:
    if not isinstance(unlabeled_x, np.ndarray) or unlabeled_x.dtype != np.uint8 or unlabeled_x.ndim != 4 \
            or len(unlabeled_x) == 0:
        raise DalDistError(f"unlabeled_x: expected a non-empty uint8 N×H×W×C array, got "
                           f"{getattr(unlabeled_x, 'dtype', type(unlabeled_x).__name__)} "
                           f"shape {getattr(unlabeled_x, 'shape', '?')}")


def selector_read(image_shape: tuple[int, int, int] | None,
                  model_config: ModelConfig) -> tuple[tuple[int, int, int], bool]:
    """(shape, photo) to read the selector's images with, so it trains on what scoring will feed it.

    The pool's own shape when it already is the model's square size; else (S, S, C) by the photo
    transform, each image on its own (mixed sizes: no stretching, and S×S per image in memory, not the photo).
    """
    s, c = model_config.image_size, model_config.in_channels
    if image_shape is not None and image_shape[0] == image_shape[1] == s:
        return (int(image_shape[0]), int(image_shape[1]), int(image_shape[2])), False
    return (s, s, c), True


def train_sraal_round(pool: str | os.PathLike, labeled_ids: np.ndarray, labels: np.ndarray,
                      unlabeled_ids: np.ndarray, model_config: ModelConfig, cfg: SRAALConfig,
                      out_checkpoint: str | os.PathLike, *, image_shape: tuple[int, int, int] | None = None,
                      init_checkpoint: str | os.PathLike | None = None,
                      storage_dir: str | os.PathLike | None = None, executor: str = "ray") -> TrainResult:
    """The driver's entry point: draw `cfg.unlabeled_sample` unlabeled ids (seeded), read those images and
    the labeled ones from the pool in one pass, train SRAAL through Ray Train (`executor="local"`: in
    this process), write `out_checkpoint` (a `"sraal"` model that `score_pool(..., acquisitions="sraal")`
    scores). `image_shape`: the pool's uniform (H, W, C), None when sizes vary (then `selector_read`: the
    photo transform to the model's size). Returns a `TrainResult`; its metrics carry `unlabeled_sampled`
    and `disc_auc`.
    """
    labeled_ids = np.asarray(labeled_ids, dtype=np.int64)
    unlabeled_ids = np.asarray(unlabeled_ids, dtype=np.int64)
    if len(labeled_ids) != len(labels):
        raise DalDistError(f"labeled_ids and labels: length mismatch ({len(labeled_ids)} ids, {len(labels)} labels)")
    if not len(unlabeled_ids):
        raise DalDistError("sraal: no unlabeled ids to train the state discriminator on")
    overlap = np.intersect1d(labeled_ids, unlabeled_ids)
    if len(overlap):
        raise DalDistError(f"sraal: ids {overlap[:5].tolist()} are both labeled and unlabeled")
    rng = np.random.default_rng((cfg.seed, 0x5AA1))  # its own stream: the fit's batch order uses cfg.seed
    sample = np.sort(rng.choice(unlabeled_ids, size=min(cfg.unlabeled_sample, len(unlabeled_ids)), replace=False))
    images = read_images(Path(pool), np.concatenate([labeled_ids, sample]),  # one pool pass
                         *selector_read(image_shape, model_config))
    labeled_x, unlabeled_x = images[:len(labeled_ids)], images[len(labeled_ids):]
    result = train_sraal_selector(model_config, labeled_x, np.asarray(labels, dtype=np.int64), unlabeled_x, cfg,
                                  out_checkpoint, init_checkpoint=init_checkpoint, storage_dir=storage_dir,
                                  executor=executor)
    result.metrics["unlabeled_sampled"] = int(len(sample))
    return result


__all__ = ["SRAALConfig", "SRAALModel", "adversarial_loss", "discriminator_auc", "discriminator_loss",
           "fit_sraal", "online_uncertainty_indicator", "selector_read", "state_scores", "target_loss",
           "train_sraal_round",
           "train_sraal_selector", "train_sraal_step", "vae_loss"]
