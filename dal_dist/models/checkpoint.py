"""Model checkpoints: one file, `{"format", "config" (JSON), "state_dict", "extra" (JSON)}`.

Loaded with `weights_only=True`, so a file holding pickled code is refused; the stored config rebuilds
the architecture through the registry and the weights must fit it exactly. A plug-in model's config
names its factory ("package.module:factory"): loading its checkpoint imports that module.

Format 1 (before the torchvision architectures) named the 32-px ResNet-18 "resnet18"; such a file loads
as what it is: "resnet18-small" (its 3x3 stem), or "resnet18" where it had the 7x7 stem (inputs > 64 px).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch

from dal_dist.atomic import atomic_path
from dal_dist.errors import DalDistError
from dal_dist.models.base import DALModel, ModelConfig
from dal_dist.models.registry import build_model
from dal_dist.models.weights import load_weights_only

CHECKPOINT_FORMAT = "dal-dist-checkpoint/2"
LEGACY_FORMAT = "dal-dist-checkpoint/1"  # "resnet18" meant the small-input variant when inputs were <= 64 px
CHECKPOINT_FILE = "model.pt"  # a round's trained model, and the file a Ray Train worker reports


def save_checkpoint(model: DALModel, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write state dict + JSON config atomically; `extra` holds JSON-able metadata (round, metrics)."""
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
    payload = load_weights_only(path, "checkpoint", "a dal-dist checkpoint holds only tensors and JSON")
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (CHECKPOINT_FORMAT, LEGACY_FORMAT):
        raise DalDistError(f"checkpoint {path}: not a dal-dist checkpoint (expected format "
                           f"{CHECKPOINT_FORMAT!r} with `config` and `state_dict`)")
    try:
        config = ModelConfig.from_json(payload["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise DalDistError(f"checkpoint {path}: field `config` is not a valid model config: {e}") from e
    if fmt == LEGACY_FORMAT:
        config = legacy_config(config)
    if expect_name is not None and config.name != expect_name:
        raise DalDistError(f"checkpoint {path}: holds model {config.name!r}, expected {expect_name!r}")
    try:
        model = build_model(config, load_pretrained=False)  # the state dict below replaces any weights
    except DalDistError as e:
        raise DalDistError(f"checkpoint {path}: {e}") from e
    _load_state(model, payload["state_dict"], path)
    return model.eval()


def legacy_config(config: ModelConfig) -> ModelConfig:
    """A format-1 config under today's names: its "resnet18" was the small-input variant unless inputs were > 64 px."""
    if config.name != "resnet18":
        return config
    small = config.extra.get("small_input", config.image_size <= 64)
    return dataclasses.replace(config, name="resnet18-small" if small else "resnet18")


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
