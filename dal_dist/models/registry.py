"""Model names: the built-in registry, plug-ins, per-model input defaults, and `build_model`.

A built-in name maps to a `"module:factory"` path imported only when that name is built: a model
defined by a method (`"sraal"`, in `dal_dist.methods.sraal`) registers here without this package
importing the method, and checkpoints written under any name load in any process (a fresh Ray worker
included) because the path is resolved there, on first use. Any other name is a plug-in
("package.module:factory", or a name given to `register_model`; see `dal_dist.models.plugin`).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models.base import DALModel, ModelConfig, normalization
from dal_dist.models.loss_prediction import LossPredictionModule
from dal_dist.models.plugin import (NAME, PLUGINS, build_plugin, check_factory_path, factory_path_of, import_factory,
                                    is_factory_path)
from dal_dist.models.weights import load_weights

MODEL_FACTORIES: dict[str, str] = {
    "mnist-cnn": "dal_dist.models.nets:MnistCNN",
    "resnet18-small": "dal_dist.models.vision:ResNet",
    "resnet18": "dal_dist.models.vision:ResNet",
    "resnet34": "dal_dist.models.vision:ResNet",
    "resnet50": "dal_dist.models.vision:ResNet",
    "efficientnet_b0": "dal_dist.models.vision:TorchvisionNet",
    "convnext_tiny": "dal_dist.models.vision:TorchvisionNet",
    "vit_b_16": "dal_dist.models.vision:TorchvisionNet",
    "embedding-head": "dal_dist.models.embedding_head:EmbeddingHead",
    "sraal": "dal_dist.methods.sraal:SRAALModel",
}
# Not a run's `model.name`: built by their strategy (sraal), or trained on cached embeddings (embedding-head).
METHOD_MODELS = frozenset({"sraal", "embedding-head"})


@dataclass(frozen=True)
class InputDefaults:
    """What a model expects when the user says nothing: channels, side in pixels, normalization."""

    channels: int
    image_size: int
    normalize: str


SMALL_INPUTS = {"mnist-cnn": InputDefaults(1, 28, "half"), "sraal": InputDefaults(1, 28, "half"),
                "resnet18-small": InputDefaults(3, 32, "half"),
                "embedding-head": InputDefaults(512, 1, "none")}  # a D-wide embedding row is a D×1×1 input
PHOTO_INPUTS = InputDefaults(3, 224, "imagenet")  # torchvision architectures and plug-ins


def task_model_names() -> list[str]:
    """The names a run's model may take besides plug-ins (registered ones included)."""
    return sorted(n for n in MODEL_FACTORIES if n not in METHOD_MODELS) + sorted(PLUGINS)


def unknown_name(name: str) -> DalDistError:
    """The one error for a name nothing resolves."""
    return DalDistError(f"model: unknown name {name!r}; expected one of {sorted(MODEL_FACTORIES) + sorted(PLUGINS)} "
                        "or a plug-in 'package.module:factory'")


def check_model_name(name: str, task: bool = True) -> None:
    """`name` resolves to a model (a plug-in's module is imported now, to fail early); one-line error otherwise."""
    if not isinstance(name, str) or not name:
        raise DalDistError(f"model: name must be a non-empty string, got {name!r}")
    if name in MODEL_FACTORIES:
        if task and name in METHOD_MODELS:
            raise DalDistError(f"model: {name!r} is the model of strategy {name}, not a task model; expected one "
                               f"of {task_model_names()} or a plug-in 'package.module:factory'")
        return
    if name in PLUGINS:
        return
    if not is_factory_path(name):
        raise unknown_name(name)
    import_factory(name)


def model_factory(name: str) -> Callable[..., Any]:
    """The factory registered for `name`, imported now (so a model's module loads only when it is built)."""
    if name in PLUGINS or is_factory_path(name):
        return import_factory(PLUGINS.get(name, name))
    if name not in MODEL_FACTORIES:
        raise unknown_name(name)
    path = MODEL_FACTORIES[name]
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise DalDistError(f"model {name!r}: factory {path!r} cannot be loaded: {type(e).__name__}: {e}") from e


def default_config(name: str, num_classes: int, in_channels: int | None = None, image_size: int | None = None,
                   seed: int = 0, weights: str | os.PathLike | None = None,
                   normalize: str | Mapping[str, Any] | None = None, **extra: Any) -> ModelConfig:
    """Sensible defaults per model: mnist-cnn 1×28×28, resnet18-small 3×32×32, torchvision and plug-ins 3×224×224
    with ImageNet's mean/std (`normalize` overrides: imagenet | half | none | {mean, std})."""
    if name in PLUGINS:
        factory: str | None = PLUGINS[name]
    elif is_factory_path(name):
        check_factory_path(name)
        factory = None  # the name is the path
    elif name in MODEL_FACTORIES:
        factory = None
    else:
        raise unknown_name(name)
    spec = SMALL_INPUTS.get(name, PHOTO_INPUTS)
    c, s = in_channels or spec.channels, image_size or spec.image_size
    mean, std = normalization(normalize, c, default=spec.normalize)
    dropout = extra.pop("dropout", 0.5)
    return ModelConfig(name=name, num_classes=num_classes, in_channels=c, image_size=s, seed=seed,
                       dropout=dropout, mean=mean, std=std, extra=extra, factory=factory,
                       weights=os.path.abspath(weights) if weights is not None else None)


def build_model(config: ModelConfig, load_pretrained: bool = True) -> DALModel:
    """Instantiate a model, seeded so `model init` is reproducible; its backbone from `config.weights` if set.

    `load_pretrained=False` skips the weights file (a checkpoint's own state replaces them anyway).
    """
    check_config(config)
    path = config.factory_path
    factory = import_factory(path) if path else model_factory(config.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_plugin(config, factory) if path else factory(config)
        if config.extra.get("learning_loss"):
            if not model.level_channels:
                raise DalDistError(f"model {config.name!r}: Learning Loss needs intermediate feature maps, which "
                                   "only mnist-cnn and the ResNets expose")
            # Part of the model (and its checkpoint) so scoring can emit `pred_loss`.
            model.loss_module = LossPredictionModule(model.level_channels,
                                                     hidden=int(config.extra.get("loss_hidden", 128)))
    if load_pretrained and config.weights:
        load_weights(model, config.weights)
    return model.eval()


def register_model(name: str, factory: Callable[..., nn.Module] | str) -> str:
    """Make `name` a model name in this process: `factory(num_classes=C)` builds it; returns its "module:factory".

    The factory must be importable by its module path (a module-level function or class, not a lambda,
    a closure or something defined in `__main__`): checkpoints record that path, and Ray workers,
    fresh processes, rebuild the model from it.
    """
    if not isinstance(name, str) or not NAME.match(name) or is_factory_path(name):
        raise DalDistError(f"register_model: name must be letters, digits, '-', '_' or '.' (no ':'), got {name!r}")
    if name in MODEL_FACTORIES:
        raise DalDistError(f"register_model: {name!r} is a built-in model name; choose another")
    path = factory if isinstance(factory, str) else factory_path_of(factory)
    if import_factory(path) is not factory and not isinstance(factory, str):
        raise DalDistError(f"register_model {name!r}: {path!r} does not import back to the factory given "
                           "(define it at module level in a module file)")
    if PLUGINS.get(name, path) != path:
        raise DalDistError(f"register_model: {name!r} is already registered to {PLUGINS[name]!r}")
    PLUGINS[name] = path
    return path


def check_config(config: ModelConfig) -> None:
    """Sizes that every model needs, as one-line errors before anything is built."""
    if config.num_classes < 2:
        raise DalDistError(f"model: num_classes must be >= 2, got {config.num_classes}")
    if config.in_channels < 1 or config.image_size < 1:
        raise DalDistError(f"model {config.name!r}: in_channels and image_size must be >= 1, "
                           f"got {config.in_channels} and {config.image_size}")
    for what, values in (("mean", config.mean), ("std", config.std)):
        if len(values) not in (1, config.in_channels):
            raise DalDistError(f"model {config.name!r}: {what} has {len(values)} values; expected 1 or "
                               f"{config.in_channels} (one per input channel)")
