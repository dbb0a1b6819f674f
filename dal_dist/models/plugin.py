"""Plug-in models: `package.module:factory`, imported by name, and how that module reaches Ray workers.

`factory(num_classes=C)` returns a `torch.nn.Module` with `features(x) -> [B, D]` (deterministic: no
dropout, no sampling) and `head(f) -> logits [B, C]` (all of the model's `nn.Dropout`s); an optional
`embed(f)` gives the embedding k-center uses (default: the features). `PluginModel` wraps it in the
`DALModel` protocol. The module is imported as `python -c "import package.module"` would, i.e. with the
current directory first on the path; checkpoints record the "module:factory" string, never code, so
loading one imports that module (as `import` would) in whatever process loads it.

Ray workers are fresh processes elsewhere: a module that is not installed (found in the current
directory or on PYTHONPATH) has its top-level package directory, or its single file, zipped and uploaded
to the cluster for each scoring or training job (Ray `runtime_env` `py_modules`, as `ray.init` does for a
job's own; `runtime_env_for`, `ray_runtime_env`), so workers on any node import it. A module found in
site-packages is not shipped: install that package on every node of a real cluster.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import site
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models.base import DALModel, ModelConfig

FACTORY_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
PLUGINS: dict[str, str] = {}  # register_model: name -> "module:factory" (this process only)


def is_factory_path(name: str) -> bool:
    """Whether `name` has the plug-in form "package.module:factory"."""
    return ":" in name


def check_factory_path(path: str) -> None:
    """The "package.module:factory" syntax, or a one-line error."""
    if not FACTORY_PATH.match(path):
        raise DalDistError(f"model {path!r}: a plug-in model is named 'package.module:factory' (dotted Python "
                           "names on both sides of one colon)")


@contextmanager
def cwd_on_path() -> Iterator[None]:
    """The current directory first on sys.path while importing, as `python -c` has it."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def import_factory(path: str) -> Callable[..., Any]:
    """The callable "package.module:factory" names, imported now (current directory first), or a one-line error."""
    check_factory_path(path)
    module_name, _, attr = path.partition(":")
    importlib.invalidate_caches()  # a module file written since the last import attempt is found
    try:
        with cwd_on_path():
            obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise DalDistError(f"model {path!r}: cannot import module {module_name!r} from the current directory "
                           f"({os.getcwd()}) or the installed packages ({e})") from None
    except Exception as e:  # SyntaxError, or anything the module raises at import
        raise DalDistError(f"model {path!r}: importing module {module_name!r} failed: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DalDistError(f"model {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DalDistError(f"model {path!r}: {attr!r} is a {type(obj).__name__}, not a callable factory")
    return obj


def factory_path_of(factory: Callable[..., Any]) -> str:
    """"module:qualname" of a module-level callable, or a one-line error saying why it has none."""
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    if not callable(factory) or not module or not qualname:
        raise DalDistError(f"register_model: factory must be a callable with a module path, got {factory!r}")
    if module == "__main__" or "<" in qualname:
        raise DalDistError(f"register_model: factory {qualname} is defined in {module}"
                           f"{' (a lambda or a function inside a function)' if '<' in qualname else ''}; "
                           "Ray workers and later runs rebuild models by module path: define it at module "
                           "level in a module file and import it from there")
    return f"{module}:{qualname}"


class PluginModel(DALModel):
    """A plug-in `nn.Module` (features, head, optional embed) in the `DALModel` protocol; its weights under `net.`."""

    def __init__(self, config: ModelConfig, net: nn.Module):
        super().__init__()
        self.config = config
        self.net = net
        self.level_channels = ()  # no Learning Loss taps
        self.embed_dim = 0  # set by `check_plugin_model`

    def feature_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.net.features(x), []

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.head(f)

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.embed(f) if callable(getattr(self.net, "embed", None)) else f

    def torchvision_key(self, key: str) -> str:
        return key.removeprefix("net.")  # the file is the plug-in module's own state_dict()


def build_plugin(config: ModelConfig, factory: Callable[..., Any]) -> PluginModel:
    """`factory(num_classes=C)`, checked: an nn.Module whose features and head give the right shapes."""
    path = config.factory_path
    try:
        net = factory(num_classes=config.num_classes)
    except Exception as e:
        raise DalDistError(f"model {path!r}: factory(num_classes={config.num_classes}) raised "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(net, nn.Module):
        raise DalDistError(f"model {path!r}: factory returned a {type(net).__name__}; expected a torch.nn.Module "
                           "with features(x) and head(f)")
    lacking = [m for m in ("features", "head") if not callable(getattr(net, m, None))]
    if lacking:
        raise DalDistError(f"model {path!r}: the factory's {type(net).__name__} has no {' or '.join(lacking)} "
                           "method; a plug-in model needs features(x) -> [B, D] (deterministic backbone) and "
                           "head(f) -> logits [B, C] (all dropout)")
    model = PluginModel(config, net)
    check_plugin_model(model)
    return model


def check_plugin_model(model: PluginModel) -> None:
    """Two images of the configured size through features, head and embed: 2-D outputs of the right widths."""
    c = model.config
    x = torch.zeros(2, c.in_channels, c.image_size, c.image_size)
    was_training = model.training
    model.eval()  # batch-norm running statistics stay as the factory made them
    try:
        with torch.no_grad():
            f = plugin_step(model, "features(x)", model.features, x, None)
            plugin_step(model, "head(f)", model.head, f, c.num_classes)
            model.embed_dim = int(plugin_step(model, "embed(f)", model.embed, f, None).shape[1])
    finally:
        model.train(was_training)


def plugin_step(model: PluginModel, what: str, fn: Callable[[torch.Tensor], Any], arg: torch.Tensor,
                width: int | None) -> torch.Tensor:
    """`fn(arg)`, which must be a [2, width] tensor (any width when None), or a one-line error naming the step."""
    path = model.config.factory_path
    try:
        out = fn(arg)
    except Exception as err:
        raise DalDistError(f"model {path!r}: {what} on a {tuple(arg.shape)} input failed: {type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}") from err
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2 or (width and out.shape[1] != width):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DalDistError(f"model {path!r}: {what} returned {shape} for a batch of 2; expected [2, {width or 'D'}]")
    return out


# ------------------------------------------------------------------------------------- Ray workers
def module_locations(path: str) -> list[str]:
    """Where the top-level package (its directories) or module file of a "module:factory" lives; [] if not found."""
    top = path.partition(":")[0].split(".")[0]
    try:
        with cwd_on_path():
            spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [str(Path(p).resolve()) for p in spec.submodule_search_locations]
    return [str(Path(spec.origin).resolve())] if spec.origin and spec.origin.endswith(".py") else []


def installed_roots() -> list[Path]:
    """Directories whose modules every worker of this environment imports anyway (site-packages, stdlib)."""
    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    dirs += [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    return [Path(d).resolve() for d in dirs if d]


def runtime_env_for(config: ModelConfig | str) -> dict[str, Any] | None:
    """The Ray `runtime_env` that lets workers import a plug-in model's module (None when nothing must travel).

    A module found under site-packages or the standard library is imported on workers as here; one found
    elsewhere (the current directory, a PYTHONPATH entry) is shipped as `py_modules`: its top-level
    package directory, or its single file.
    """
    if isinstance(config, str):
        path = config if is_factory_path(config) else PLUGINS.get(config)
    else:
        path = config.factory_path
    if path is None or path.partition(":")[0].split(".")[0] == "dal_dist":
        return None
    roots = installed_roots()
    ship = [loc for loc in module_locations(path)
            if not any(Path(loc) == r or r in Path(loc).parents for r in roots)]
    return {"py_modules": ship} if ship else None


def ray_runtime_env(env: dict[str, Any] | None, inherited: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """`env` (from `runtime_env_for`) ready for one task's or actor's `runtime_env=` on the connected cluster.

    Ray accepts local paths in `py_modules` only at `ray.init`; for a task or an actor they must be URIs,
    so each local entry is zipped and uploaded to the cluster's store here, as `ray.init` does for a
    job's own (content-addressed: an unchanged module is not uploaded twice). A task-level `py_modules`
    replaces the job's, so the job's (`inherited`) come first in it.
    """
    if not env:
        return None
    modules = [upload_py_module(m) for m in env.get("py_modules", [])]
    before = list((inherited or {}).get("py_modules") or [])
    return {**env, "py_modules": before + [m for m in modules if m not in before]}


def upload_py_module(location: str) -> str:
    """The cluster URI of a local package directory or .py file, uploaded if the cluster lacks it."""
    import inspect
    import logging
    import tempfile

    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed  # what ray.init uses

    if "://" in location:
        return location
    kwargs: dict[str, Any] = {"logger": logging.getLogger(__name__)}
    if "include_gitignore" in inspect.signature(upload_py_modules_if_needed).parameters:
        kwargs["include_gitignore"] = True
    with tempfile.TemporaryDirectory(prefix="dal-dist-py-modules-") as scratch:
        try:
            env = upload_py_modules_if_needed({"py_modules": [location]}, scratch_dir=scratch, **kwargs)
        except Exception as e:
            raise DalDistError(f"plug-in module {location}: cannot be shipped to the Ray workers: "
                               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    return env["py_modules"][0]
