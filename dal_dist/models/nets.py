"""The small built-in network for MNIST-sized inputs (torchvision architectures: `dal_dist.models.vision`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models.base import DALModel, ModelConfig


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
