"""Models: the backbone/head split, MC-head equivalence, preprocessing, the name registry."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models import (MODEL_FACTORIES, build_model, default_config, mc_head_probs, model_factory, preprocess,
                             save_checkpoint)

PACKAGE = Path(__file__).resolve().parents[2] / "dal_dist"


def _input(model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    return torch.randn(n, c.in_channels, c.image_size, c.image_size, generator=g)


def _dropout_only_train(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.train(True)


def test_shapes_and_embedding_is_deterministic(model):
    x = _input(model)
    f, levels = model.feature_levels(x)
    assert model.head(f).shape == (4, 10)
    assert model.embed(f).shape == (4, model.embed_dim)
    assert [lv.shape[1] for lv in levels] == list(model.level_channels)
    _dropout_only_train(model)
    assert torch.equal(model.embed(model.features(x)), model.embed(model.features(x)))


def test_backbone_consumes_no_randomness_so_head_sampling_is_exact(model):
    """Per sample: a full stochastic forward pass == backbone once + the head, given the same RNG state."""
    x = _input(model)
    _dropout_only_train(model)
    f = model.features(x)
    for s in range(5):
        torch.manual_seed(s)
        full = model(x)
        torch.manual_seed(s)
        head_only = model.head(f)
        assert torch.equal(full, head_only)


def test_mc_head_matches_t_full_forward_passes_in_distribution():
    """mc_head_probs (one batched head pass over T copies) vs T independent full stochastic passes."""
    model = build_model(default_config("mnist-cnn", 10, seed=1))
    x = _input(model, n=3, seed=5)
    T = 3000
    torch.manual_seed(0)
    with torch.no_grad():
        head = mc_head_probs(model, model.features(x), T)
        _dropout_only_train(model)
        # T full stochastic passes as one batch: in train mode every row draws its own dropout masks.
        full = torch.softmax(model(x.repeat(T, 1, 1, 1)), -1).view(T, len(x), -1)
    assert head.shape == full.shape == (T, 3, 10)
    se = torch.sqrt(full.var(0) / T + head.var(0) / T) + 1e-6
    assert ((head.mean(0) - full.mean(0)).abs() / se).max() < 5.0
    # Spread matches too (the per-class std across samples), within 10%.
    assert torch.allclose(head.std(0), full.std(0), rtol=0.1, atol=2e-3)
    model.eval()
    mc_head_probs(model, model.features(x), 2)
    assert not model.drop1.training and not model.training


def test_mc_head_samples_differ_and_are_seeded():
    model = build_model(default_config("mnist-cnn", 10))
    f = model.features(_input(model))
    torch.manual_seed(7)
    a = mc_head_probs(model, f, 8)
    torch.manual_seed(7)
    b = mc_head_probs(model, f, 8)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])
    assert torch.allclose(a.sum(-1), torch.ones(8, 4))


def test_model_init_is_seeded():
    a = build_model(default_config("mnist-cnn", 10, seed=4)).state_dict()
    b = build_model(default_config("mnist-cnn", 10, seed=4)).state_dict()
    c = build_model(default_config("mnist-cnn", 10, seed=5)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_preprocess_converts_channels_and_size():
    cfg = default_config("resnet18-small", 10, image_size=32)
    imgs = torch.randint(0, 256, (2, 28, 28, 1), dtype=torch.uint8)
    x = preprocess(imgs, cfg)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1])


# --- registry --------------------------------------------------------------------------------------

def test_registry_resolves_module_factory_paths_when_built():
    from dal_dist.methods.sraal import SRAALModel

    assert MODEL_FACTORIES["sraal"] == "dal_dist.methods.sraal:SRAALModel"
    assert model_factory("sraal") is SRAALModel
    assert isinstance(build_model(default_config("sraal", 10)), SRAALModel)
    with pytest.raises(DalDistError, match="unknown name 'vgg'"):
        build_model(default_config("vgg", 10))
    with pytest.raises(DalDistError, match="image_size must be >= 10"):
        build_model(default_config("mnist-cnn", 10, image_size=8))


def test_models_and_training_never_import_methods():
    """The registry names methods' models by path: no import statement (top-level or lazy) may reach them."""
    offenders = []
    for pkg in ("models", "training"):
        for path in sorted((PACKAGE / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.name}: {n}" for n in names if n.startswith("dal_dist.methods")]
    assert offenders == []


def test_a_fresh_process_loads_checkpoints_of_every_registered_name(tmp_path):
    """Checkpoints name their model; a process that imported nothing but `dal_dist.models` rebuilds each."""
    names = ["mnist-cnn", "resnet18-small", "resnet18", "efficientnet_b0", "embedding-head", "sraal"]  # one per factory
    assert {MODEL_FACTORIES[n] for n in names} == set(MODEL_FACTORIES.values())
    for name in names:
        size = {"resnet18-small": 16, "resnet18": 32, "efficientnet_b0": 32, "embedding-head": 1}.get(name, 28)
        save_checkpoint(build_model(default_config(name, 10, image_size=size, seed=2)), tmp_path / f"{name}.pt")
    code = ("import sys; from dal_dist.models import load_checkpoint\n"
            "for p in sys.argv[1:]: m = load_checkpoint(p); "
            "print(type(m).__name__, m.config.name, 'dal_dist.methods' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, *(str(tmp_path / f"{n}.pt") for n in names)],
                         capture_output=True, text=True, cwd=PACKAGE.parent, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # A method's module is imported only when a checkpoint of its model is loaded.
    assert out.stdout.split() == ["MnistCNN", "mnist-cnn", "False", "ResNet", "resnet18-small", "False",
                                  "ResNet", "resnet18", "False", "TorchvisionNet", "efficientnet_b0", "False",
                                  "EmbeddingHead", "embedding-head", "False", "SRAALModel", "sraal", "True"]
