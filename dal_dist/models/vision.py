"""torchvision architectures by name: the network without its classifier is the backbone, dropout → linear the head.

All dropout sits in the head (backbone-once MC dropout stays exact): the backbones are built with their
stochastic depth and internal dropout at 0, so `features(x)` is deterministic in train mode too. Nothing
is downloaded: every network is built with `weights=None`; pretrained weights come from a local file
(`dal_dist.models.weights`), whose torchvision key names `torchvision_key` gives for each of this model's.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models.base import DALModel, ModelConfig

# name -> torchvision builder; `resnet18-small` is ResNet-18 with a 3x3 stride-1 stem and no max-pool.
RESNETS = {"resnet18-small": "resnet18", "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50"}
HEAD_KEYS = frozenset({"fc.weight", "fc.bias"})


class ResNet(DALModel):
    """torchvision ResNet backbone (stem, layer1-4, global average pool) with a dropout → linear head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        import torchvision

        if config.name not in RESNETS:
            raise DalDistError(f"model {config.name!r}: not a ResNet; expected one of {sorted(RESNETS)}")
        self.config = config
        c = config.in_channels
        net = getattr(torchvision.models, RESNETS[config.name])(weights=None, num_classes=config.num_classes)
        if config.name == "resnet18-small":
            net.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif c != 3:
            net.conv1 = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.drop = nn.Dropout(config.dropout)
        self.fc = net.fc
        width = net.fc.in_features  # 512 (basic blocks) or 2048 (bottlenecks)
        self.level_channels = (width // 8, width // 4, width // 2, width)
        self.embed_dim = width

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

    torchvision_classifier = ("fc.",)

    def torchvision_key(self, key: str) -> str:
        for ours, theirs in (("stem.0.", "conv1."), ("stem.1.", "bn1.")):
            if key.startswith(ours):
                return theirs + key[len(ours):]
        return key

    def head_keys(self) -> set[str]:
        return set(HEAD_KEYS)


def _efficientnet(tv: Any, config: ModelConfig) -> tuple[nn.Module, int, tuple[str, ...]]:
    net = tv.efficientnet_b0(weights=None, stochastic_depth_prob=0.0)
    dim = net.classifier[1].in_features
    net.classifier = nn.Identity()  # was Dropout → Linear
    return net, dim, ("classifier.",)


def _convnext(tv: Any, config: ModelConfig) -> tuple[nn.Module, int, tuple[str, ...]]:
    net = tv.convnext_tiny(weights=None, stochastic_depth_prob=0.0)
    dim = net.classifier[2].in_features
    net.classifier = nn.Sequential(net.classifier[0], net.classifier[1])  # LayerNorm2d, Flatten: backbone
    return net, dim, ("classifier.2.",)


def _vit(tv: Any, config: ModelConfig) -> tuple[nn.Module, int, tuple[str, ...]]:
    if config.image_size % 16:
        raise DalDistError(f"model vit_b_16: image_size must be a multiple of the 16-px patch, got {config.image_size}")
    net = tv.vit_b_16(weights=None, image_size=config.image_size)  # dropout, attention_dropout: 0 by default
    dim = net.hidden_dim
    net.heads = nn.Identity()  # the class token's output is the feature vector
    return net, dim, ("heads.",)


# name -> builder of (torchvision network without classifier, feature width, classifier key prefixes)
BACKBONES: dict[str, Callable[[Any, ModelConfig], tuple[nn.Module, int, tuple[str, ...]]]] = {
    "efficientnet_b0": _efficientnet, "convnext_tiny": _convnext, "vit_b_16": _vit,
}


class TorchvisionNet(DALModel):
    """A torchvision classifier whose forward, classifier removed, gives [B, D]: backbone + dropout → linear."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        import torchvision

        if config.name not in BACKBONES:
            raise DalDistError(f"model {config.name!r}: no torchvision backbone of that name; "
                               f"expected one of {sorted(BACKBONES)}")
        self.config = config
        net, dim, self.torchvision_classifier = BACKBONES[config.name](torchvision.models, config)
        if config.in_channels != 3:
            replace_first_conv(net, config.in_channels)
        self.backbone = net
        self.drop = nn.Dropout(config.dropout)
        self.fc = nn.Linear(dim, config.num_classes)
        self.level_channels = ()  # no Learning Loss taps
        self.embed_dim = dim

    def feature_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.backbone(x), []

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(f))

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return f

    def torchvision_key(self, key: str) -> str:
        return key.removeprefix("backbone.")

    def head_keys(self) -> set[str]:
        return set(HEAD_KEYS)


def replace_first_conv(net: nn.Module, in_channels: int) -> None:
    """Swap the network's first Conv2d for one taking `in_channels` (same kernel, stride, padding, width)."""
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, name, nn.Conv2d(in_channels, child.out_channels, child.kernel_size,
                                                stride=child.stride, padding=child.padding, dilation=child.dilation,
                                                groups=1, bias=child.bias is not None))
                return
    raise DalDistError(f"{type(net).__name__}: no Conv2d to adapt to {in_channels} input channels")
