"""The built-in networks and the name registry that `build_model` resolves a `ModelConfig.name` through.

The registry maps a name to a `"module:factory"` path, imported only when that name is built: a
model defined by a method (`"sraal"`, in `dal_dist.methods.sraal`) registers here without this
package importing the method, and checkpoints written under any registered name load in any process
(a fresh Ray worker included) because the path is resolved there, on first use.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models.base import DALModel, ModelConfig
from dal_dist.models.loss_prediction import LossPredictionModule


class MnistCNN(DALModel):
    """Gal, Islam & Ghahramani 2017 (ICML) MNIST CNN: conv32-4x4, conv32-4x4, pool, drop .25, fc128, drop .5."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.image_size < 10:
            raise DalDistError(f"model mnist-cnn: image_size must be >= 10, got {config.image_size}")
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


MODEL_FACTORIES: dict[str, str] = {
    "mnist-cnn": "dal_dist.models.nets:MnistCNN",
    "resnet18": "dal_dist.models.nets:ResNet18",
    "sraal": "dal_dist.methods.sraal:SRAALModel",
}


def model_factory(name: str) -> Callable[[ModelConfig], DALModel]:
    """The factory registered for `name`, imported now (so a model's module loads only when it is built)."""
    if name not in MODEL_FACTORIES:
        raise DalDistError(f"model: unknown name {name!r}; expected one of {sorted(MODEL_FACTORIES)}")
    path = MODEL_FACTORIES[name]
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise DalDistError(f"model {name!r}: factory {path!r} cannot be loaded: {type(e).__name__}: {e}") from e


def build_model(config: ModelConfig) -> DALModel:
    """Instantiate a registered model, seeded so `model init` is reproducible."""
    factory = model_factory(config.name)
    if config.num_classes < 2:
        raise DalDistError(f"model: num_classes must be >= 2, got {config.num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = factory(config)
        if config.extra.get("learning_loss"):
            # Part of the model (and its checkpoint) so scoring can emit `pred_loss`.
            model.loss_module = LossPredictionModule(model.level_channels,
                                                     hidden=int(config.extra.get("loss_hidden", 128)))
    return model.eval()
