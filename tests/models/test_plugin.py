"""Plug-in models: `package.module:factory` from the current directory, register_model, Ray workers get the module."""

import gzip
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dal_dist.errors import DalDistError
from dal_dist.models import (PluginModel, build_model, check_model_name, default_config, load_checkpoint,
                             register_model, runtime_env_for, save_checkpoint)
from dal_dist.models.plugin import PLUGINS, import_factory

PLUGIN_SOURCE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv → global mean (the deterministic backbone); dropout → linear (the head)."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, num_classes)

    def features(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))

    def head(self, f):
        return self.fc(self.drop(f))


def build(num_classes):
    return TinyNet(num_classes)


def no_head(num_classes):
    return nn.Linear(3, num_classes)


def not_a_module(num_classes):
    return "a string"


class MapFeatures(TinyNet):
    def features(self, x):
        return torch.relu(self.conv(x))


def raises(num_classes):
    raise ValueError("no such size")


NOT_CALLABLE = 3
'''
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module file in a fresh current directory (a unique name: each test imports its own)."""
    name = f"tiny_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_a_plug_in_is_imported_from_the_current_directory_and_wrapped(plugin):
    name = f"{plugin}:build"
    check_model_name(name)
    cfg = default_config(name, 4, image_size=16)
    assert (cfg.in_channels, cfg.image_size, cfg.factory_path) == (3, 16, name)
    model = build_model(cfg)
    assert isinstance(model, PluginModel) and not model.training
    x = torch.randn(5, 3, 16, 16)
    f = model.features(x)
    assert f.shape == (5, 8) and model.head(f).shape == (5, 4) and model.embed_dim == 8
    assert model.head_keys() == {"net.fc.weight", "net.fc.bias"}
    assert torch.equal(build_model(cfg).state_dict()["net.conv.weight"], model.state_dict()["net.conv.weight"])
    assert plugin not in str(sys.path)  # the current directory was on the path only while importing


def test_bad_plug_ins_are_one_line_errors(plugin):
    cases = {
        "nowhere_xyz.mod:build": "cannot import module 'nowhere_xyz.mod' from the current directory",
        f"{plugin}:missing": f"module '{plugin}' has no attribute 'missing'",
        f"{plugin}:NOT_CALLABLE": "'NOT_CALLABLE' is a int, not a callable factory",
        f"{plugin}:no_head": "the factory's Linear has no features or head method; a plug-in model needs "
                             "features\\(x\\)",
        f"{plugin}:not_a_module": "factory returned a str; expected a torch.nn.Module",
        f"{plugin}:MapFeatures": r"features\(x\) returned \(2, 8, 7, 7\) for a batch of 2; expected \[2, D\]",
        f"{plugin}:raises": r"factory\(num_classes=4\) raised ValueError: no such size",
        "a-b:c": "a plug-in model is named 'package.module:factory'",
    }
    for name, message in cases.items():
        with pytest.raises(DalDistError, match=message) as e:
            build_model(default_config(name, 4, image_size=16))
        assert "\n" not in str(e.value)
    with pytest.raises(DalDistError, match="unknown name 'vgg'"):
        check_model_name("vgg")
    with pytest.raises(DalDistError, match="Learning Loss needs intermediate feature maps"):
        build_model(default_config(f"{plugin}:build", 4, image_size=16, learning_loss=True))


def test_checkpoints_record_the_factory_by_name_and_load_in_a_fresh_process(plugin, tmp_path):
    cfg = default_config(f"{plugin}:build", 3, image_size=16, seed=5)
    model = build_model(cfg)
    save_checkpoint(model, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # tensors and JSON only: no pickled code
    assert f'"name": "{plugin}:build"' in payload["config"]
    # One fresh process: first where the module is not importable (the error names module and checkpoint),
    # then from the module's directory, as `python -c` would import it.
    code = ("import os, sys, torch; from dal_dist.errors import DalDistError\n"
            "from dal_dist.models import load_checkpoint\n"
            "try: load_checkpoint(sys.argv[1])\n"
            "except DalDistError as e: print(e)\n"
            "os.chdir(sys.argv[2]); m = load_checkpoint(sys.argv[1])\n"
            "print(type(m).__name__, float(m.features(torch.ones(1, 3, 16, 16)).sum()))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt"), str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    error, loaded = out.stdout.strip().splitlines()
    assert error.startswith(f"checkpoint {tmp_path / 'm.pt'}: model '{plugin}:build': cannot import module '{plugin}'")
    kind, total = loaded.split()
    assert kind == "PluginModel"
    with torch.no_grad():
        assert float(total) == pytest.approx(float(model.features(torch.ones(1, 3, 16, 16)).sum()), rel=1e-6)


def test_register_model_names_a_module_level_factory(plugin, monkeypatch):
    module = sys.modules[import_factory(f"{plugin}:build").__module__]
    name = f"tiny-{plugin[-8:]}"
    monkeypatch.setitem(PLUGINS, name, f"{plugin}:build")  # restored (removed) after the test
    PLUGINS.pop(name)
    assert register_model(name, module.build) == f"{plugin}:build"
    assert register_model(name, module.build) == f"{plugin}:build"  # the same again: no change
    cfg = default_config(name, 3, image_size=16)
    assert cfg.name == name and cfg.factory == f"{plugin}:build"
    assert isinstance(build_model(cfg), PluginModel)
    check_model_name(name)
    with pytest.raises(DalDistError, match="already registered"):
        register_model(name, module.raises)
    with pytest.raises(DalDistError, match="a lambda or a function inside a function"):
        register_model("lam", lambda num_classes: module.build(num_classes))
    with pytest.raises(DalDistError, match="is a built-in model name"):
        register_model("resnet18", module.build)
    with pytest.raises(DalDistError, match="no ':'"):
        register_model("a:b", module.build)


def test_runtime_env_ships_local_modules_only(plugin, tmp_path):
    assert runtime_env_for(default_config(f"{plugin}:build", 3)) == {"py_modules": [str(tmp_path / f"{plugin}.py")]}
    assert runtime_env_for(default_config("resnet18", 3)) is None
    assert runtime_env_for("torch.nn:Linear") is None  # installed: every worker imports it already
    assert runtime_env_for("dal_dist.models.nets:MnistCNN") is None
    pkg = tmp_path / f"pkg_{plugin[-8:]}"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "nets.py").write_text(PLUGIN_SOURCE)
    assert runtime_env_for(f"{pkg.name}.sub.nets:build") == {"py_modules": [str(pkg)]}


def _mnist_rgb(mnist_test_dir, n):
    with gzip.open(mnist_test_dir / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:n]
    with gzip.open(mnist_test_dir / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n].astype(np.int64)
    return np.repeat(x, 3, axis=-1), y


def test_a_plug_in_model_scores_a_pool_on_two_ray_workers(plugin, tmp_path, ray_local, mnist_test_dir):
    """The module exists only in this test's directory: the Ray actors import it from the shipped py_modules."""
    from dal_dist.pool import write_pool
    from dal_dist.scoring import score_pool

    x, y = _mnist_rgb(mnist_test_dir, 96)
    write_pool(tmp_path / "pool", x, y, chunk_rows=32)
    model = build_model(default_config(f"{plugin}:build", 10, image_size=28, seed=1))
    save_checkpoint(model, tmp_path / "m.pt")
    summary = score_pool(tmp_path / "pool", tmp_path / "m.pt", tmp_path / "scores", acquisitions="bald,entropy",
                         mc_samples=4, workers=2, batch_size=16, progress=False)
    assert summary.rows == 96 and summary.rejects == 0 and summary.workers == 2
    table = pq.read_table(tmp_path / "scores").sort_by("id")
    assert table.column("id").to_pylist() == list(range(96))
    # The embedding is the plug-in's deterministic features (no dropout), as computed here.
    from dal_dist.models import preprocess

    with torch.no_grad():
        f = load_checkpoint(tmp_path / "m.pt").features(preprocess(torch.from_numpy(x), model.config))
    emb = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(emb, f.numpy(), rtol=2e-3, atol=2e-3)
    assert np.all(np.asarray(table.column("bald")) >= 0)
