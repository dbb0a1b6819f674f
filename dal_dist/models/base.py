"""The model protocol: a deterministic backbone `features(x)` split from a stochastic `head(f)`.

The split is what makes MC dropout cheap: all dropout sits in the head, so the backbone runs once per
image and only the head is sampled T times (Gal & Ghahramani 2016; exact, see `mc_head_probs`).
`ModelConfig` is what rebuilds a model exactly (stored as JSON in every checkpoint); `preprocess` is the
one uint8-pixels-to-model-input conversion that training, evaluation and scoring share.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dal_dist.errors import DalDistError


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

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the form stored in checkpoints and shipped to workers."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Inverse of `to_json` (JSON lists back to the tuples `mean` and `std` are)."""
        d = json.loads(text)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


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

    @property
    def has_loss_module(self) -> bool:
        """Whether a Learning Loss module rides on this model (then scoring can emit `pred_loss`)."""
        return getattr(self, "loss_module", None) is not None


def default_config(name: str, num_classes: int, in_channels: int | None = None,
                   image_size: int | None = None, seed: int = 0, **extra: Any) -> ModelConfig:
    """Sensible defaults per model: mnist-cnn 1×28×28, resnet18 3×32×32."""
    if name == "resnet18":
        c, s = in_channels or 3, image_size or 32
    else:
        c, s = in_channels or 1, image_size or 28
    mean = tuple([0.5] * c)
    std = tuple([0.5] * c)
    dropout = extra.pop("dropout", 0.5)
    return ModelConfig(name=name, num_classes=num_classes, in_channels=c, image_size=s, seed=seed,
                       dropout=dropout, mean=mean, std=std, extra=extra)


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


