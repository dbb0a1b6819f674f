"""Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019): a module that predicts the target loss.

Per feature level: global average pooling → FC → ReLU; the level vectors are concatenated → FC → a
scalar. Trained jointly with the target model through a pairwise margin ranking loss, so only the
*order* of losses matters (the scale of the target loss drifts during training). The module is a head
of the task model (built with it when `extra["learning_loss"]`, saved in its checkpoint), hence here.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LossPredictionModule(nn.Module):
    """Predicts each sample's target loss from the backbone's intermediate feature maps."""

    def __init__(self, level_channels: Sequence[int], hidden: int = 128):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(c, hidden) for c in level_channels)
        self.out = nn.Linear(hidden * len(level_channels), 1)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """Predicted loss per sample (B) from the B×C×H×W feature maps of each level."""
        # Global average pooling as a mean: same value, and its CUDA backward is deterministic.
        pooled = [F.relu(fc(h.mean(dim=(2, 3)))) for fc, h in zip(self.fcs, levels)]
        return self.out(torch.cat(pooled, dim=1)).squeeze(1)


def loss_prediction_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Margin ranking loss over pairs (i, B-1-i) of the mini-batch (the paper's Eq. 2, ξ = `margin`).

    For each pair, L = max(0, −1(l_i, l_j)·(l̂_i − l̂_j) + ξ) with 1(l_i, l_j) = +1 if l_i > l_j else −1,
    as in the paper (ties count as l_i < l_j); the mean is over the B/2 pairs. The target losses are
    detached so the ranking objective does not push the target model's losses around. Odd batches
    drop the middle sample; a batch of one has no pair and contributes zero (with a graph, for DDP).
    """
    b = pred.shape[0] // 2
    if b == 0:
        return pred.sum() * 0.0
    pred_i, pred_j = pred[:b], pred.flip(0)[:b]
    tgt = target.detach()
    sign = torch.where(tgt[:b] > tgt.flip(0)[:b], 1.0, -1.0).to(pred.dtype)
    return torch.clamp(-sign * (pred_i - pred_j) + margin, min=0.0).mean()
