"""Model registry: every model splits a deterministic backbone `features(x)` from a stochastic `head(f)`.

The split is what makes MC dropout cheap: all dropout sits in the head, so the backbone runs once per
image and only the head is sampled T times (Gal & Ghahramani 2016; exact, see `mc_head_probs`).
Checkpoints are one file, `{"format", "config" (JSON), "state_dict"}`, loaded with `weights_only=True`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from dal_dist.errors import DalDistError

CHECKPOINT_FORMAT = "dal-dist-checkpoint/1"


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
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        d = json.loads(text)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


class DALModel(nn.Module):
    """Base: `forward = head(features(x))`; `embed(f)` is the head's penultimate activation, dropout off."""

    config: ModelConfig
    level_channels: tuple[int, ...]  # channels of the feature maps `feature_levels` returns

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_levels(x)[0]

    def feature_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Backbone output plus intermediate feature maps (Learning Loss taps these)."""
        raise NotImplementedError

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """Stochastic part: logits; dropout active when `mc=True` in `head_logits` or in train mode."""
        raise NotImplementedError

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def has_loss_module(self) -> bool:
        return getattr(self, "loss_module", None) is not None


class MnistCNN(DALModel):
    """Gal, Islam & Ghahramani 2017 (ICML) MNIST CNN: conv32-4x4, conv32-4x4, pool, drop .25, fc128, drop .5."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config.in_channels
        self.conv1 = nn.Conv2d(c, 32, 4)
        self.conv2 = nn.Conv2d(32, 32, 4)
        side = (config.image_size - 6) // 2
        self.flat_dim = 32 * side * side
        self.drop1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(self.flat_dim, 128)
        self.drop2 = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(128, config.num_classes)
        self.level_channels = (32, 32)
        self.embed_dim = 128

    def feature_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h1 = F.relu(self.conv1(x))
        h2 = F.relu(self.conv2(h1))
        return torch.flatten(F.max_pool2d(h2, 2), 1), [h1, h2]

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop2(F.relu(self.fc1(self.drop1(f)))))

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc1(f))


class ResNet18(DALModel):
    """torchvision ResNet-18 backbone with a dropout→linear head; `small_input` uses a 3x3 stem, no max-pool."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        import torchvision

        self.config = config
        net = torchvision.models.resnet18(weights=None, num_classes=config.num_classes)
        if config.extra.get("small_input", config.image_size <= 64):
            net.conv1 = nn.Conv2d(config.in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif config.in_channels != 3:
            net.conv1 = nn.Conv2d(config.in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.drop = nn.Dropout(config.dropout)
        self.fc = net.fc
        self.level_channels = (64, 128, 256, 512)
        self.embed_dim = 512

    def feature_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.stem(x)
        levels = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            h = layer(h)
            levels.append(h)
        return h.mean(dim=(2, 3)), levels  # = global average pool; deterministic CUDA backward

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(f))

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return f


def _sraal(config: ModelConfig) -> DALModel:
    from dal_dist.sraal import SRAALModel  # imported lazily: dal_dist.sraal imports this module

    return SRAALModel(config)


REGISTRY: dict[str, Callable[[ModelConfig], DALModel]] = {"mnist-cnn": MnistCNN, "resnet18": ResNet18,
                                                          "sraal": _sraal}


def build_model(config: ModelConfig) -> DALModel:
    """Instantiate a registered model, seeded so `model init` is reproducible."""
    if config.name not in REGISTRY:
        raise DalDistError(f"model: unknown name {config.name!r}; expected one of {sorted(REGISTRY)}")
    if config.num_classes < 2:
        raise DalDistError(f"model: num_classes must be >= 2, got {config.num_classes}")
    if config.name == "mnist-cnn" and config.image_size < 10:
        raise DalDistError(f"model mnist-cnn: image_size must be >= 10, got {config.image_size}")
    if config.name == "sraal" and (config.image_size < 8 or config.image_size % 4):
        raise DalDistError(f"model sraal: image_size must be a multiple of 4 and >= 8 (two stride-2 "
                           f"convolutions mirrored by the decoder), got {config.image_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = REGISTRY[config.name](config)
        if config.extra.get("learning_loss"):
            from dal_dist.learning_loss import LossPredictionModule

            # Part of the model (and its checkpoint) so scoring can emit `pred_loss`.
            model.loss_module = LossPredictionModule(model.level_channels,
                                                     hidden=int(config.extra.get("loss_hidden", 128)))
    return model.eval()


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


def save_checkpoint(model: DALModel, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write state dict + JSON config atomically; `extra` holds JSON-able metadata (round, metrics)."""
    from dal_dist.atomic import atomic_path

    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": json.dumps(extra or {}, sort_keys=True, default=str),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, expect_name: str | None = None) -> DALModel:
    """Load a checkpoint safely (`weights_only=True`: pickled code is refused) and check its architecture."""
    path = str(path)
    if not os.path.exists(path):
        raise DalDistError(f"checkpoint {path}: file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for pickled code, RuntimeError for corrupt zips
        raise DalDistError(f"checkpoint {path}: refused or unreadable with weights_only=True "
                           f"(a dal-dist checkpoint holds only tensors and JSON): {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DalDistError(f"checkpoint {path}: not a dal-dist checkpoint (expected format "
                           f"{CHECKPOINT_FORMAT!r} with `config` and `state_dict`)")
    try:
        config = ModelConfig.from_json(payload["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise DalDistError(f"checkpoint {path}: field `config` is not a valid model config: {e}") from e
    if expect_name is not None and config.name != expect_name:
        raise DalDistError(f"checkpoint {path}: holds model {config.name!r}, expected {expect_name!r}")
    model = build_model(config)
    _load_state(model, payload["state_dict"], path)
    return model.eval()


def _load_state(model: DALModel, state: dict[str, torch.Tensor], path: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:3]))
        raise DalDistError(f"checkpoint {path}: state dict does not fit architecture "
                           f"{model.config.name!r} ({', '.join(parts)})")
    model.load_state_dict(state)


def checkpoint_config(path: str | os.PathLike) -> ModelConfig:
    """Read only the config of a checkpoint (to size inputs before shipping the model to actors)."""
    return load_checkpoint(path).config
