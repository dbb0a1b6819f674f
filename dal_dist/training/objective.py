"""The classifier's training objective: cross-entropy, plus Learning Loss's ranking term when the model has one.

Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019): total loss = mean CE + λ · margin ranking
loss between the loss module's predictions and the per-sample CE; after epoch E the feature maps are
detached, so the module stops shaping the backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dal_dist.models import DALModel, loss_prediction_loss


class TrainingForward(nn.Module):
    """The one module DDP wraps: logits and (with a loss module) predicted losses from one backbone pass."""

    def __init__(self, model: DALModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, detach_levels: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, predicted losses or None); `detach_levels` cuts the loss module off the backbone."""
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
