"""Early stopping on validation accuracy, keeping the best epoch's weights."""

from __future__ import annotations

import torch
from torch import nn


class EarlyStopping:
    """Stop after `patience` epochs without a better val_acc, keeping the best epoch's weights (None: never)."""

    def __init__(self, patience: int | None):
        self.patience = patience
        self.best_val, self.best_epoch, self.stale = -1.0, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_acc: float, model: nn.Module) -> bool:
        """Record one epoch's validation accuracy; True when training should stop."""
        if val_acc > self.best_val:
            self.best_val, self.best_epoch, self.stale = val_acc, epoch, 0
            if self.patience is not None:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience
