"""Bayesian Generative Active Deep Learning: a VAE-ACGAN that turns each acquired image into a labeled twin.

Tran, Do, Reid & Carneiro 2019 (ICML), "Bayesian Generative Active Deep Learning": every round the
learner acquires the most informative pool samples x* by BALD, the oracle labels them, and the
generated samples x' = g(e(x*)) join the labeled set with the oracle's label y* of x*. The generator
is a VAE-ACGAN trained with L = L_VAE + L_ACGAN: a VAE (encoder e, decoder g; Kingma & Welling 2014)
whose decoder is also the class-conditional generator of an ACGAN (Odena, Olah & Shlens 2017), whose
discriminator has a real/fake head and an auxiliary class head.

One deliberate difference from the paper: there the ACGAN's auxiliary classifier *is* the learner; here
the discriminator carries its own class head and the learner stays the registry model trained by
`dal_dist.training`, so BGADL adds a step after labeling instead of changing the Ray Train loop (the
learner still benefits, through the generated samples it trains on).

Pure torch, no Ray: the VAE-ACGAN is small (two conv layers per network) and trains on the labeled
set only (hundreds to a few thousand images), which one CPU core or GPU handles in seconds.
Generated samples are uint8 N×H×W×C, stored as pool-format Parquet with negative ids, so they go
through the same `preprocess` as pool images and never collide with pool ids.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from dal_dist.atomic import atomic_path, write_parquet_atomic
from dal_dist.errors import DalDistError
from dal_dist.models.weights import load_weights_only
from dal_dist.pool import decode_images, pool_schema, raw_image_batch

CHECKPOINT_FORMAT = "dal-dist-vae-acgan/1"
GENERATED_COLUMNS = ("id", "image", "height", "width", "channels", "label", "source_id")
ROUND_ID_STRIDE = 1 << 32  # ids of round r's generated samples: -(r·2³² + k + 1), k < 2³²


class BGADLConfig(BaseModel):
    """VAE-ACGAN hyper-parameters and the generated-per-acquired ratio; unknown keys are errors (YAML)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(400, ge=1, description="gradient steps (one D and one E+G update each) per fit")
    batch_size: int = Field(64, ge=2)
    lr: float = Field(5e-4, gt=0, description="Adam, betas (0.5, 0.999) as in DCGAN/ACGAN")
    latent_dim: int = Field(32, ge=1)
    width: int = Field(32, ge=4, description="channels of the first conv layer (second has 2x)")
    rec_weight: float = Field(1.0, ge=0, description="per-pixel squared error in [-1, 1] pixel units")
    kl_weight: float = Field(1.0, ge=0, description="KL(q(z|x) || N(0, I)) divided by the pixel count")
    adv_weight: float = Field(0.05, ge=0, description="generator's real/fake term, relative to L_VAE")
    aux_weight: float = Field(0.5, ge=0, description="auxiliary-class terms for D and G (ACGAN L_C)")
    generated_per_acquired: int = Field(1, ge=1, description="x' per acquired x*: the first decodes the "
                                        "posterior mean, the others posterior samples")
    warm_start: bool = Field(True, description="continue from the previous round's VAE-ACGAN when given")
    seed: int = Field(0, ge=0)


# ----------------------------------------------------------------------------------------- model
def _padded(side: int) -> int:
    return -(-side // 4) * 4  # two stride-2 convs: work at the next multiple of 4, crop back at the end


class VAEACGAN(nn.Module):
    """Encoder e(x) → (μ, log σ²), class-conditional generator g(z, y), discriminator d(x) → (real/fake, class).

    Any H×W×C (C in 1..4): images are padded with background (-1) to multiples of 4 and outputs cropped
    back, so 28×28×1 and 32×32×3 use the same networks. Pixels live in [-1, 1] (tanh output).
    """

    def __init__(self, image_shape: Sequence[int], num_classes: int, latent_dim: int = 32, width: int = 32):
        super().__init__()
        h, w, c = (int(v) for v in image_shape)
        if min(h, w) < 4 or not 1 <= c <= 4:
            raise DalDistError(f"VAE-ACGAN: image shape {h}x{w}x{c} unsupported (need H, W >= 4, C in 1..4)")
        if num_classes < 2:
            raise DalDistError(f"VAE-ACGAN: num_classes must be >= 2, got {num_classes}")
        self.arch = {"image_shape": [h, w, c], "num_classes": int(num_classes), "latent_dim": int(latent_dim),
                     "width": int(width)}
        self.image_shape, self.num_classes, self.latent_dim = (h, w, c), int(num_classes), int(latent_dim)
        self.ph, self.pw = _padded(h), _padded(w)
        flat = 2 * width * (self.ph // 4) * (self.pw // 4)

        def trunk() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten())

        self.enc = trunk()
        self.enc_out = nn.Linear(flat, 2 * latent_dim)
        self.gen_in = nn.Linear(latent_dim + num_classes, flat)
        self.gen = nn.Sequential(nn.ReLU(), nn.Unflatten(1, (2 * width, self.ph // 4, self.pw // 4)),
                                 nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(width, c, 4, 2, 1), nn.Tanh())
        self.disc = trunk()
        self.disc_adv = nn.Linear(flat, 1)
        self.disc_aux = nn.Linear(flat, num_classes)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w, _ = self.image_shape
        return F.pad(x, (0, self.pw - w, 0, self.ph - h), value=-1.0) if (self.ph, self.pw) != (h, w) else x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) = N(μ, diag σ²): returns (μ, log σ²), each B×latent."""
        mu, logvar = self.enc_out(self.enc(self._pad(x))).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)  # keeps exp() finite early in training

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """g(z, y): the ACGAN generator conditioned on the class through a one-hot input."""
        onehot = F.one_hot(y, self.num_classes).to(z.dtype)
        h, w, _ = self.image_shape
        return self.gen(self.gen_in(torch.cat([z, onehot], dim=1)))[:, :, :h, :w]

    def discriminate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """d(x): (real/fake logit B, auxiliary class logits B×K)."""
        f = self.disc(self._pad(x))
        return self.disc_adv(f).squeeze(1), self.disc_aux(f)

    def encoder_generator_parameters(self) -> list[nn.Parameter]:
        return [*self.enc.parameters(), *self.enc_out.parameters(), *self.gen_in.parameters(),
                *self.gen.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [*self.disc.parameters(), *self.disc_adv.parameters(), *self.disc_aux.parameters()]


def build_vae_acgan(image_shape: Sequence[int], num_classes: int, cfg: BGADLConfig) -> VAEACGAN:
    """A freshly initialised VAE-ACGAN, seeded by `cfg.seed` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return VAEACGAN(image_shape, num_classes, cfg.latent_dim, cfg.width)


def to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×C → float N×C×H×W in [-1, 1], the VAE-ACGAN's pixel space."""
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    return t.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float N×C×H×W in [-1, 1] → uint8 N×H×W×C (rounded), the pool's pixel format."""
    return ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8) \
        .permute(0, 2, 3, 1).contiguous().numpy()


# ---------------------------------------------------------------------------------------- losses
def vae_loss(x: torch.Tensor, x_rec: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """L_VAE terms, per pixel: (mean squared reconstruction error, KL(q(z|x) || N(0, I)) / pixels).

    The negative ELBO of a Gaussian decoder (Kingma & Welling 2014, eq. 10) divided by the pixel count
    D, so its scale does not grow with the image size and the ACGAN terms keep their relative weight.
    """
    rec = F.mse_loss(x_rec, x)
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1).mean()
    return rec, kl / x[0].numel()


def discriminator_loss(real_adv: torch.Tensor, fake_adv: torch.Tensor, real_aux: torch.Tensor,
                       real_y: torch.Tensor, fake_aux: torch.Tensor, fake_y: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """ACGAN discriminator terms (Odena et al. 2017, L_S and L_C): (real/fake BCE, class CE on real + fake)."""
    adv = F.binary_cross_entropy_with_logits(real_adv, torch.ones_like(real_adv)) \
        + F.binary_cross_entropy_with_logits(fake_adv, torch.zeros_like(fake_adv))
    aux = F.cross_entropy(real_aux, real_y) + F.cross_entropy(fake_aux, fake_y)
    return adv, aux


def generator_loss(fake_adv: torch.Tensor, fake_aux: torch.Tensor, fake_y: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """ACGAN generator terms: (non-saturating real/fake BCE, class CE of its samples under d's class head)."""
    adv = F.binary_cross_entropy_with_logits(fake_adv, torch.ones_like(fake_adv))
    return adv, F.cross_entropy(fake_aux, fake_y)


# -------------------------------------------------------------------------------------- training
def _check_labeled(images: Any, labels: Any, what: str, shape: tuple[int, int, int] | None = None,
                   num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate once at the boundary: uint8 N×H×W×C images, matching integer labels in range."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{type(images).__name__} {getattr(images, 'dtype', '')} shape {getattr(images, 'shape', '?')}"
        raise DalDistError(f"{what}: expected a uint8 numpy array N×H×W×C, got {got}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
        raise DalDistError(f"{what}: labels must be a 1-D integer array of {len(images)} entries, "
                           f"got {labels.dtype} shape {labels.shape}")
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        raise DalDistError(f"{what}: images are {images.shape[1:]}, the VAE-ACGAN was built for {tuple(shape)}")
    if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min() if labels.min() < 0 else labels.max())
        raise DalDistError(f"{what}: label {bad} outside [0, {num_classes})")
    return images, labels.astype(np.int64)


def train_step(model: VAEACGAN, opt_d: torch.optim.Optimizer, opt_g: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, cfg: BGADLConfig, gen: torch.Generator) -> dict[str, float]:
    """One D update, then one E+G update on L = L_VAE + L_ACGAN, over reconstructions g(e(x)) and prior samples.

    Fakes are of two kinds, as in VAE-GAN (Larsen et al. 2016): reconstructions g(z~q(z|x), y) carrying
    the real labels, and prior samples g(z~N(0, I), y') with uniformly drawn labels y'.
    """
    b = x.shape[0]
    mu, logvar = model.encode(x)
    eps = torch.randn(mu.shape, generator=gen, device=mu.device)
    x_rec = model.decode(mu + eps * (0.5 * logvar).exp(), y)
    z_p = torch.randn(mu.shape, generator=gen, device=mu.device)
    y_p = torch.randint(0, model.num_classes, (b,), generator=gen, device=y.device)
    x_p = model.decode(z_p, y_p)
    fakes, fake_y = torch.cat([x_rec, x_p]), torch.cat([y, y_p])

    adv, aux = model.discriminate(torch.cat([x, fakes.detach()]))  # one pass over real and fake
    real_adv, real_aux = adv[:b], aux[:b]
    d_adv, d_aux = discriminator_loss(real_adv, adv[b:], real_aux, y, aux[b:], fake_y)
    opt_d.zero_grad(set_to_none=True)
    (d_adv + cfg.aux_weight * d_aux).backward()
    opt_d.step()

    rec, kl = vae_loss(x, x_rec, mu, logvar)
    d_params = model.discriminator_parameters()
    for p in d_params:  # d is fixed in the E+G update: skip its weight gradients (most of the backward cost)
        p.requires_grad_(False)
    try:
        g_adv, g_aux = generator_loss(*model.discriminate(fakes), fake_y)
    finally:
        for p in d_params:
            p.requires_grad_(True)
    loss_g = cfg.rec_weight * rec + cfg.kl_weight * kl + cfg.adv_weight * g_adv + cfg.aux_weight * g_aux
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"vae_rec": rec.item(), "vae_kl": kl.item(), "d_adv": d_adv.item(), "d_aux": d_aux.item(),
            "g_adv": g_adv.item(), "g_aux": g_aux.item(),
            "d_aux_acc": float((real_aux.argmax(1) == y).float().mean())}


def fit_vae_acgan(model: VAEACGAN, images: np.ndarray, labels: np.ndarray, cfg: BGADLConfig,
                  device: torch.device | str = "cpu") -> list[dict[str, float]]:
    """Train in place for `cfg.steps` steps; deterministic for a seed (own generator, reshuffled per epoch).

    Returns one row of loss terms per step. Memory: the images stay uint8 on the host; one batch at a
    time is converted, so the labeled set may be much larger than a batch.
    """
    images, labels = _check_labeled(images, labels, "fit_vae_acgan", model.image_shape, model.num_classes)
    if len(labels) < 2:
        raise DalDistError(f"fit_vae_acgan: need at least 2 labeled images, got {len(labels)}")
    device = torch.device(device)
    model.to(device).train()
    opt_d = torch.optim.Adam(model.discriminator_parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(model.encoder_generator_parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 65_537 + 11)
    order_gen = torch.Generator().manual_seed(cfg.seed * 65_537 + 13)
    n, bs = len(labels), min(cfg.batch_size, len(labels))
    x_all, y_all = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
    order, pos, history = torch.randperm(n, generator=order_gen), 0, []
    for _ in range(cfg.steps):
        if pos + bs > n:  # drop the ragged tail: every step sees a full batch
            order, pos = torch.randperm(n, generator=order_gen), 0
        idx = order[pos:pos + bs]
        pos += bs
        x, y = to_unit(x_all[idx]).to(device), y_all[idx].to(device)
        history.append(train_step(model, opt_d, opt_g, x, y, cfg, gen))
    model.eval()
    return history


@torch.no_grad()
def aux_accuracy(model: VAEACGAN, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy of the discriminator's auxiliary class head on real images (a health check of D)."""
    images, labels = _check_labeled(images, labels, "aux_accuracy", model.image_shape, model.num_classes)
    device = next(model.parameters()).device
    correct = 0
    for s in range(0, len(labels), batch_size):
        _, logits = model.discriminate(to_unit(images[s:s + batch_size]).to(device))
        correct += int((logits.argmax(1).cpu() == torch.from_numpy(labels[s:s + batch_size])).sum())
    return correct / max(1, len(labels))


@torch.no_grad()
def generate_from(model: VAEACGAN, x_star: np.ndarray, y_star: np.ndarray, per_source: int = 1,
                  seed: int = 0, batch_size: int = 512) -> np.ndarray:
    """x' = g(e(x*), y*) as uint8 N·k×H×W×C, source-major (rows i·k … i·k+k−1 come from x*_i).

    Copy 0 decodes the posterior mean μ(x*): deterministic, and the most faithful reconstruction, so
    the oracle's label y* stays right for it. Copies 1..k−1 decode posterior samples z ~ q(z|x*)
    (seeded) for diversity, as the paper's sampled g(e(x*)) does.
    """
    x_star, y_star = _check_labeled(x_star, y_star, "generate_from", model.image_shape, model.num_classes)
    if per_source < 1:
        raise DalDistError(f"generate_from: per_source must be >= 1, got {per_source}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed * 65_537 + 17)
    out = []
    try:
        for s in range(0, len(y_star), batch_size):
            x = to_unit(x_star[s:s + batch_size]).to(device)
            y = torch.from_numpy(y_star[s:s + batch_size]).to(device)
            mu, logvar = model.encode(x)
            copies = [model.decode(mu, y)]
            for _ in range(per_source - 1):
                eps = torch.randn(mu.shape, generator=gen, device=device)
                copies.append(model.decode(mu + eps * (0.5 * logvar).exp(), y))
            out.append(to_uint8(torch.stack(copies, dim=1).flatten(0, 1)))
    finally:
        model.train(was_training)
    h, w, c = model.image_shape
    return np.concatenate(out) if out else np.zeros((0, h, w, c), np.uint8)


# ----------------------------------------------------------------------------------- persistence
def save_vae_acgan(model: VAEACGAN, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """State dict + JSON architecture, written atomically; loadable with `weights_only=True`."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(model.arch, sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": json.dumps(extra or {}, sort_keys=True, default=str),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_vae_acgan(path: str | os.PathLike) -> VAEACGAN:
    """Load safely (`weights_only=True`: pickled code is refused) and check the weights fit the architecture."""
    path = str(path)
    if not os.path.exists(path):
        raise DalDistError(f"VAE-ACGAN checkpoint {path}: file not found")
    payload = load_weights_only(path, "VAE-ACGAN checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DalDistError(f"VAE-ACGAN checkpoint {path}: not a {CHECKPOINT_FORMAT!r} file "
                           "(expected `format`, `config`, `state_dict`)")
    try:
        arch = json.loads(payload["config"])
        model = VAEACGAN(arch["image_shape"], arch["num_classes"], arch["latent_dim"], arch["width"])
    except (KeyError, TypeError, ValueError) as e:
        raise DalDistError(f"VAE-ACGAN checkpoint {path}: field `config` is not a valid architecture: {e}") from e
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise DalDistError(f"VAE-ACGAN checkpoint {path}: state dict does not fit its architecture: "
                           f"{str(e).splitlines()[0]}") from e
    return model.eval()


def round_first_id(round_index: int) -> int:
    """First (largest) id of round r's generated samples; rounds never share an id and none is >= 0."""
    if round_index < 0:
        raise DalDistError(f"round_first_id: round must be >= 0, got {round_index}")
    return -(round_index * ROUND_ID_STRIDE) - 1


def generated_schema() -> pa.Schema:
    """The pool schema (raw pixels + label) plus `source_id`: the pool id of the x* each x' came from."""
    return pool_schema(has_label=True, extra=[pa.field("source_id", pa.int64())])


def write_generated(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, source_ids: np.ndarray,
                    first_id: int) -> np.ndarray:
    """Write generated samples as one pool-format Parquet file, atomically; ids first_id, first_id−1, …"""
    images, labels = _check_labeled(images, labels, f"write_generated {path}")
    source_ids = np.asarray(source_ids, dtype=np.int64)
    if source_ids.shape != labels.shape:
        raise DalDistError(f"write_generated {path}: {len(source_ids)} source ids for {len(labels)} images")
    if first_id >= 0:
        raise DalDistError(f"write_generated {path}: first_id must be negative (pool ids are >= 0), got {first_id}")
    if len(labels) and labels.min() < 0:
        raise DalDistError(f"write_generated {path}: negative label {labels.min()}")
    ids = first_id - np.arange(len(labels), dtype=np.int64)
    schema = generated_schema()
    rb = raw_image_batch(ids, images, labels, schema)
    rb = rb.set_column(schema.get_field_index("source_id"), "source_id", pa.array(source_ids, pa.int64()))
    write_parquet_atomic(path, pa.Table.from_batches([rb], schema=schema))
    return ids


def read_generated(paths: Sequence[str | os.PathLike], image_shape: Sequence[int] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N×H×W×C, int64 labels) of generated files, in the given order; any defect is an error.

    Checks per file: readable Parquet with the generated columns, negative non-null ids unique across all
    files, non-null non-negative labels, raw pixels of one shape (`image_shape` when given).
    """
    shape = tuple(int(v) for v in image_shape) if image_shape is not None else None
    images_parts, label_parts, seen = [], [], np.zeros(0, np.int64)
    for path in paths:
        path = str(path)
        if not os.path.isfile(path):
            raise DalDistError(f"generated file {path}: not found")
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise DalDistError(f"generated file {path}: not a readable Parquet file (truncated or corrupt?): "
                               f"{e}") from e
        missing = [c for c in GENERATED_COLUMNS if c not in table.column_names]
        if missing:
            raise DalDistError(f"generated file {path}: missing column(s) {missing}; columns: {table.column_names}")
        for name in ("id", "label"):
            if table.column(name).null_count:
                raise DalDistError(f"generated file {path}: column `{name}` has {table.column(name).null_count} "
                                   "null values")
        ids = table.column("id").to_numpy().astype(np.int64)
        labels = table.column("label").to_numpy().astype(np.int64)
        if len(ids) and ids.max() >= 0:
            raise DalDistError(f"generated file {path}: id {int(ids.max())} is not negative "
                               "(generated ids must not collide with pool ids)")
        if len(labels) and labels.min() < 0:
            raise DalDistError(f"generated file {path}: negative label {int(labels.min())} "
                               f"(id {int(ids[labels.argmin()])})")
        values, counts = np.unique(np.concatenate([seen, ids]), return_counts=True)
        if (counts > 1).any():
            raise DalDistError(f"generated file {path}: id {int(values[counts > 1][0])} appears more than "
                               "once (within or across generated files)")
        seen = np.concatenate([seen, ids])
        if table.num_rows == 0:
            continue
        decoded = decode_images(table.combine_chunks())
        if len(decoded.reject_ids):
            raise DalDistError(f"generated file {path}: id {int(decoded.reject_ids[0])}: "
                               f"{decoded.reject_reasons[0]}")
        got = tuple(decoded.images.shape[1:])
        uniform = all((table.column(c).to_numpy() == v).all() for c, v in zip(("height", "width", "channels"), got))
        if not uniform or (shape is not None and got != shape):
            raise DalDistError(f"generated file {path}: images are not all {shape or got} "
                               f"(first row {got}); generated samples must match the pool's shape")
        shape = got
        images_parts.append(decoded.images)
        label_parts.append(labels)
    if not images_parts:
        return np.zeros((0, *(shape or (0, 0, 0))), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images_parts), np.concatenate(label_parts)


# ------------------------------------------------------------------------------------ round step
@dataclass
class BGADLRoundResult:
    """What one BGADL generation step wrote: the VAE-ACGAN checkpoint, the generated file and metrics."""

    model_path: Path
    generated_path: Path
    ids: np.ndarray  # negative ids of the generated rows, in file order
    metrics: dict[str, float] = field(default_factory=dict)


def generate_bgadl_round(labeled_images: np.ndarray, labeled_labels: np.ndarray, new_images: np.ndarray,
                          new_labels: np.ndarray, new_ids: np.ndarray, cfg: BGADLConfig, *, num_classes: int,
                          round_index: int, model_out: str | os.PathLike, generated_out: str | os.PathLike,
                          init_model: str | os.PathLike | None = None,
                          device: torch.device | str = "cpu") -> BGADLRoundResult:
    """Fit the VAE-ACGAN on the labeled set (incl. this round's x*) and write x' = g(e(x*)) with y*.

    Deterministic for (cfg.seed, round_index, inputs), so a redone step rewrites identical files. With
    `cfg.warm_start` and an existing `init_model` (last round's checkpoint) training continues from it,
    else it starts from the seeded initialisation. The checkpoint is written before the generated file,
    so a file at `generated_out` always has its model beside it.
    """
    start = time.monotonic()
    labeled_images, labeled_labels = _check_labeled(labeled_images, labeled_labels, "bgadl labeled set",
                                                    num_classes=num_classes)
    shape = tuple(labeled_images.shape[1:])
    new_images, new_labels = _check_labeled(new_images, new_labels, "bgadl acquired set", shape, num_classes)
    if np.shape(new_ids) != new_labels.shape:
        raise DalDistError(f"bgadl acquired set: {np.size(new_ids)} ids for {len(new_labels)} images")
    round_cfg = cfg.model_copy(update={"seed": cfg.seed * 1_000_003 + round_index})
    if cfg.warm_start and init_model is not None and Path(init_model).exists():
        model = load_vae_acgan(init_model)
        want = {"image_shape": list(shape), "num_classes": num_classes, "latent_dim": cfg.latent_dim,
                "width": cfg.width}
        if model.arch != want:
            raise DalDistError(f"VAE-ACGAN checkpoint {init_model}: built for {model.arch}, this round needs "
                               f"{want} (warm start needs the same architecture)")
    else:
        model = build_vae_acgan(shape, num_classes, round_cfg)
    history = fit_vae_acgan(model, labeled_images, labeled_labels, round_cfg, device=device)
    last = history[-min(20, len(history)):]
    metrics = {k: float(np.mean([row[k] for row in last])) for k in history[-1]}
    metrics["aux_acc_labeled"] = aux_accuracy(model, labeled_images, labeled_labels)
    save_vae_acgan(model.cpu(), model_out, extra={"round": round_index, "bgadl": cfg.model_dump(),
                                                  "metrics": metrics})
    k = cfg.generated_per_acquired
    x_gen = generate_from(model, new_images, new_labels, per_source=k, seed=round_cfg.seed)
    ids = write_generated(generated_out, x_gen, np.repeat(new_labels, k),
                          np.repeat(np.asarray(new_ids, dtype=np.int64), k), round_first_id(round_index))
    metrics["generated"] = float(len(ids))
    metrics["seconds"] = time.monotonic() - start
    return BGADLRoundResult(Path(model_out), Path(generated_out), ids, metrics)
