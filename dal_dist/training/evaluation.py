"""Top-1 accuracy of a model or checkpoint on labeled images: plain torch, no Ray."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from dal_dist.models import DALModel, load_checkpoint, preprocess
from dal_dist.training.checks import check_training_arrays


@torch.no_grad()
def evaluate(checkpoint_or_model: DALModel | str | os.PathLike, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 512, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy with dropout off; plain torch, so the driver can call it without Ray."""
    model = checkpoint_or_model if isinstance(checkpoint_or_model, nn.Module) \
        else load_checkpoint(checkpoint_or_model)
    check_training_arrays(images, labels, model.config, "images", "labels")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for start in range(0, len(labels), batch_size):
            batch = torch.from_numpy(np.array(images[start:start + batch_size]))  # copy: may be read-only
            x = preprocess(batch.to(device), model.config)
            pred = model(x).argmax(dim=1).cpu()
            correct += int((pred == torch.from_numpy(np.asarray(labels[start:start + batch_size]))).sum())
    finally:
        model.train(was_training)
    return correct / len(labels)
