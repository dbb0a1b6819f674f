"""Boundary checks of labeled arrays, shared by every model that trains or is evaluated on them."""

from __future__ import annotations

from typing import Any

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.models import ModelConfig


def check_training_arrays(images: Any, labels: Any, config: ModelConfig, images_name: str,
                          labels_name: str) -> None:
    """Validate once at the boundary: shapes, dtypes, label range, channels the model can take."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{type(images).__name__} {getattr(images, 'dtype', '')} shape {getattr(images, 'shape', '?')}"
        raise DalDistError(f"{images_name}: expected a uint8 numpy array N×H×W×C, got {got}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DalDistError(f"{labels_name}: expected a 1-D integer array, got {labels.dtype} shape {labels.shape}")
    if len(labels) == 0:
        raise DalDistError(f"{labels_name}: the labeled set is empty; training needs at least one labeled image")
    if len(images) != len(labels):
        raise DalDistError(f"{images_name} and {labels_name}: length mismatch ({len(images)} images, "
                           f"{len(labels)} labels)")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= config.num_classes:
        bad = lo if lo < 0 else hi
        raise DalDistError(f"{labels_name}: label {bad} outside [0, {config.num_classes}) "
                           f"(model {config.name!r} has num_classes={config.num_classes})")
    c = images.shape[3]
    if c != config.in_channels and c != 1 and config.in_channels != 1:
        raise DalDistError(f"{images_name}: images have {c} channels (shape {images.shape}); model "
                           f"{config.name!r} expects {config.in_channels} (or 1, which is repeated)")
