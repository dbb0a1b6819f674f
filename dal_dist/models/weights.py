"""Pretrained weights from a local file: a torchvision-style `state_dict`, never downloaded.

The file is what `torch.save(torchvision.models.resnet50().state_dict(), FILE)` writes (a plug-in's:
its module's own `state_dict()`), read with `weights_only=True` so it cannot run code. The network's
classifier keys are dropped (the head is trained from scratch for `num_classes`); every other key of
the model must be in the file with the same shape, and the file may hold nothing else.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from dal_dist.errors import DalDistError
from dal_dist.models.base import DALModel

SHOW_KEYS = 4  # keys named per kind of problem in an error message


def load_weights_only(path: str, what: str, expected: str = "") -> Any:
    """`torch.load(weights_only=True)` of a local file: pickled code, a corrupt zip or a non-torch file is one
    DalDistError naming `what`, the file and (in parentheses) what it should have been."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for pickled code, RuntimeError for corrupt or non-torch files
        first = str(e).splitlines()[0] if str(e) else ""
        why = f" ({expected})" if expected else ""
        raise DalDistError(f"{what} {path}: refused or unreadable with weights_only=True{why}: "
                           f"{type(e).__name__}: {first}") from e


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a local state_dict file, read with `weights_only=True`, or a one-line error."""
    path = str(path)
    if not os.path.isfile(path):
        raise DalDistError(f"weights {path}: " + ("is a directory; expected a state_dict file" if os.path.isdir(path)
                                                  else "file not found"))
    state = load_weights_only(path, "weights", "expected a state_dict saved with torch.save(model.state_dict(), FILE)")
    if isinstance(state, dict) and "state_dict" in state and "config" in state:
        raise DalDistError(f"weights {path}: is a dal-dist checkpoint, not a state_dict; score or warm-start from "
                           "it as a checkpoint, or save its model's state_dict()")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the common {"state_dict": ...} wrapper of training scripts
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DalDistError(f"weights {path}: expected a state_dict (a mapping of parameter names to tensors), "
                           f"got {type(state).__name__}")
    return state


def load_weights(model: DALModel, path: str | os.PathLike) -> list[str]:
    """Load a local torchvision-style state_dict into `model`'s backbone; returns the dropped classifier keys.

    Missing, unexpected or mis-shaped keys are one DalDistError naming them (as the file names them):
    weights of another architecture never load partially.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    fresh = model.head_keys() | {k for k in own if k.startswith("loss_module.")}
    file_key = {k: model.torchvision_key(k) for k in own}
    dropped = sorted(k for k in state if k.startswith(model.torchvision_classifier))
    wanted = {file_key[k]: k for k in own if k not in fresh}
    missing = sorted(f for f in wanted if f not in state)
    unexpected = sorted(f for f in state if f not in wanted and f not in dropped)
    shapes = [f"{f} {tuple(state[f].shape)} vs {tuple(own[k].shape)}" for f, k in wanted.items()
              if f in state and tuple(state[f].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise DalDistError(f"weights {path}: do not fit model {model.config.name!r} "
                           f"({describe_mismatch(missing, unexpected, shapes)})"
                           + channels_hint(model, shapes)
                           + ("; most keys differ: weights of another architecture?"
                              if len(missing) + len(shapes) > len(wanted) // 2 else ""))
    model.load_state_dict({**own, **{k: state[f].to(own[k].dtype) for f, k in wanted.items()}})
    return dropped


def describe_mismatch(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    """'missing keys [...] (+n more); unexpected keys [...]; shape mismatch a (file) vs (model)' in one line."""
    parts = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
        if keys:
            more = f" (+{len(keys) - SHOW_KEYS} more)" if len(keys) > SHOW_KEYS else ""
            parts.append(f"{what} {keys[:SHOW_KEYS]}{more}")
    if shapes:
        more = f" (+{len(shapes) - SHOW_KEYS} more)" if len(shapes) > SHOW_KEYS else ""
        parts.append("shape mismatch (file vs model) " + "; ".join(shapes[:SHOW_KEYS]) + more)
    return "; ".join(parts)


def channels_hint(model: DALModel, shapes: list[str]) -> str:
    """A hint when only the first convolution differs: the model was sized for another channel count."""
    if len(shapes) == 1 and model.config.in_channels != 3:
        return (f"; the model takes in_channels={model.config.in_channels} but RGB weights need 3: "
                "set in_channels 3 (grey images are converted to RGB)")
    return ""
