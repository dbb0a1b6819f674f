"""The model protocol: a deterministic backbone `features(x)` split from a stochastic `head(f)`.

The split is what makes MC dropout cheap: all dropout sits in the head, so the backbone runs once per
image and only the head is sampled T times (Gal & Ghahramani 2016; exact, see `mc_head_probs`).
`ModelConfig` is what rebuilds a model exactly (stored as JSON in every checkpoint); `preprocess` is the
one uint8-pixels-to-model-input conversion that training, evaluation and scoring share, and
`normalization` turns a run config's `normalize` (imagenet | none | {mean, std}) into its mean/std.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dal_dist.errors import DalDistError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what torchvision's pretrained weights were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_NAMES = ("imagenet", "half", "none")


@dataclass(frozen=True)
class ModelConfig:
    """What is needed to rebuild a model exactly: stored as JSON inside every checkpoint."""

    name: str
    num_classes: int
    in_channels: int = 1
    image_size: int = 28
    seed: int = 0
    dropout: float = 0.5
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    extra: dict[str, Any] = field(default_factory=dict)
    # A plug-in model's factory, "package.module:factory" (None for the built-in names): recorded by name,
    # never as pickled code, so any process that can import the module rebuilds the model.
    factory: str | None = None
    # A local torchvision-style state_dict the backbone starts from (`build_model` reads it; a checkpoint
    # already holds the weights, so `load_checkpoint` never does): provenance once trained.
    weights: str | None = None

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the form stored in checkpoints and shipped to workers."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Inverse of `to_json` (JSON lists back to the tuples `mean` and `std` are)."""
        d = json.loads(text)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    @property
    def factory_path(self) -> str | None:
        """The "module:factory" a plug-in model is built by (the name itself for a direct plug-in name)."""
        return self.factory or (self.name if ":" in self.name else None)


class DALModel(nn.Module):
    """Base: `forward = head(features(x))`; `embed(f)` is the head's penultimate activation, dropout off."""

    config: ModelConfig
    level_channels: tuple[int, ...]  # channels of the feature maps `feature_levels` returns

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic backbone output: computed once per image, whatever the number of MC samples."""
        return self.feature_levels(x)[0]

    def feature_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Backbone output plus intermediate feature maps (Learning Loss taps these)."""
        raise NotImplementedError

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """Stochastic part: logits; its dropout is active in train mode (and in `mc_head_probs`)."""
        raise NotImplementedError

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        """Deterministic embedding of backbone features (k-center and hybrid selection use it)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of one (stochastic in train mode) pass."""
        return self.head(self.features(x))

    # Key prefixes of the classifier in a torchvision-style weights file: dropped, the head is trained anew.
    torchvision_classifier: tuple[str, ...] = ()

    def torchvision_key(self, key: str) -> str:
        """The name this model's state key `key` has in a torchvision-style weights file."""
        return key

    def head_keys(self) -> set[str]:
        """State keys of the head: what `weights` need not hold (trained from scratch on top of the backbone).

        Found by autograd: the parameters a head pass over (detached) backbone features reaches.
        """
        c = self.config
        p = next(self.parameters(), None)
        device = p.device if p is not None else "cpu"
        with torch.no_grad():
            f = self.features(torch.zeros(1, c.in_channels, c.image_size, c.image_size, device=device))
        with torch.enable_grad():
            grads = torch.autograd.grad(self.head(f).sum(), [q for q in self.parameters() if q.requires_grad],
                                        allow_unused=True)
        named = [n for n, q in self.named_parameters() if q.requires_grad]
        return {n for n, g in zip(named, grads) if g is not None}

    @property
    def has_loss_module(self) -> bool:
        """Whether a Learning Loss module rides on this model (then scoring can emit `pred_loss`)."""
        return getattr(self, "loss_module", None) is not None


def normalization(spec: str | Mapping[str, Any] | None, channels: int,
                  default: str = "half") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel for `normalize`: "imagenet", "half" (0.5/0.5), "none" (0/1) or {mean, std}.

    ImageNet's statistics are per RGB channel; a model of another channel count gets their average.
    """
    spec = default if spec is None else spec
    if isinstance(spec, str):
        if spec == "imagenet":
            if channels == 3:
                return IMAGENET_MEAN, IMAGENET_STD
            return (sum(IMAGENET_MEAN) / 3,) * channels, (sum(IMAGENET_STD) / 3,) * channels
        if spec == "half":
            return (0.5,) * channels, (0.5,) * channels
        if spec == "none":
            return (0.0,) * channels, (1.0,) * channels
        raise DalDistError(f"model normalize: expected one of {list(NORMALIZE_NAMES)} or {{mean, std}}, got {spec!r}")
    mean, std = spec.get("mean"), spec.get("std")
    try:
        mean_t = tuple(float(v) for v in ([mean] if isinstance(mean, (int, float)) else mean))
        std_t = tuple(float(v) for v in ([std] if isinstance(std, (int, float)) else std))
    except (TypeError, ValueError):
        raise DalDistError(f"model normalize: mean and std must be numbers or lists of numbers, "
                           f"got mean={mean!r} std={std!r}") from None
    if len(mean_t) == 1:
        mean_t = mean_t * channels
    if len(std_t) == 1:
        std_t = std_t * channels
    if len(mean_t) != channels or len(std_t) != channels:
        raise DalDistError(f"model normalize: mean and std need 1 or {channels} values (one per input channel), "
                           f"got {len(mean_t)} and {len(std_t)}")
    if not all(s > 0 for s in std_t):
        raise DalDistError(f"model normalize: every std must be > 0, got {list(std_t)}")
    return mean_t, std_t


def preprocess(images: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """uint8 N×H×W×C → normalised float N×C×S×S for the model (channel repeat/average, bilinear resize)."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    c = x.shape[1]
    if c != config.in_channels:
        if c == 1:
            x = x.expand(-1, config.in_channels, -1, -1)
        elif config.in_channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise DalDistError(f"images have {c} channels; model {config.name} expects {config.in_channels}")
    if x.shape[-2:] != (config.image_size, config.image_size):
        x = F.interpolate(x, size=(config.image_size, config.image_size), mode="bilinear",
                          align_corners=False, antialias=True)
    mean = torch.tensor(config.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(config.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def mc_head_probs(model: DALModel, f: torch.Tensor, samples: int) -> torch.Tensor:
    """T×B×C softmax probabilities from T stochastic head passes over one backbone pass.

    Exact MC dropout for these models: the backbone has no dropout, so sampling only the head draws
    from the same distribution as T full stochastic forward passes, at the cost of one backbone pass.
    The T copies run as one batched matmul (T·B rows), each row with its own dropout mask.
    """
    if hasattr(model, "sample_probs"):  # a head that samples its dropout faster, same distribution per row
        return model.sample_probs(f, samples)
    was_training = model.training
    # Only the dropout layers go stochastic: batch-norm (in the backbone) keeps its running stats.
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.train(True)
    try:
        b = f.shape[0]
        rep = f.unsqueeze(0).expand(samples, *f.shape).reshape(samples * b, *f.shape[1:])
        logits = model.head(rep)
    finally:
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.train(was_training)
    return torch.softmax(logits.float(), dim=-1).view(samples, b, -1)


