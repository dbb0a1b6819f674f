"""The run config's `model:` section: any model name, `weights`, `normalize`; old configs hash as before."""

import pytest

from dal_dist.driver.config import load_config, parse_config
from dal_dist.errors import DalDistError
from dal_dist.models import default_config

BASE = {"pool": "/p", "strategy": {"name": "bald"}, "budget": 10, "rounds": 2}


def _cfg(**model):
    return parse_config({**BASE, "model": model})


def test_configs_without_the_new_fields_hash_as_before():
    """Hashes taken with the code before `model.name: str`, `weights`, `normalize` existed."""
    assert parse_config(BASE).config_hash() == "0b465ac27fa1624bfb38d45a3e66110adee6576328f0520b27e58bc994c0e28a"
    old = {"pool": "/p", "model": {"name": "resnet18", "dropout": 0.3, "image_size": 32},
           "strategy": {"name": "kcenter"}, "budget": 5, "total_budget": 100}
    assert parse_config(old).config_hash() == "4ccb8de561230844c66d15d8a968bca26e473d9eaeef947ff0b377c62b88d80d"
    assert '"weights"' not in parse_config(old).canonical_json()
    # Setting a new field changes the hash (it changes what the run computes).
    assert _cfg(name="resnet18", weights="/w.pt").config_hash() != _cfg(name="resnet18").config_hash()
    assert _cfg(normalize="imagenet").config_hash() != parse_config(BASE).config_hash()


@pytest.mark.parametrize("name", ["mnist-cnn", "resnet18-small", "resnet18", "resnet50", "efficientnet_b0",
                                  "convnext_tiny", "vit_b_16", "torch.nn:Linear"])
def test_every_model_name_is_accepted(name):
    assert _cfg(name=name).model.name == name


@pytest.mark.parametrize("model, message", [
    ({"name": "vgg"}, "model.name: .*unknown name 'vgg'"),
    ({"name": "sraal"}, "model.name: .*'sraal' is the model of strategy sraal"),
    ({"name": "nowhere_xyz:build"}, "model.name: .*cannot import module 'nowhere_xyz'"),
    ({"normalize": "imgnet"}, r"model.normalize: .*expected one of \['imagenet', 'half', 'none'\]"),
    ({"normalize": {"mean": [0.5], "std": [0]}}, "model.normalize: .*every std must be > 0"),
    ({"normalize": {"mean": [0.5], "sd": [1]}}, "model.normalize: .*std: Field required; sd: unknown key"),
    ({"weights": ""}, "model.weights: String should have at least 1 character"),
])
def test_bad_model_sections_are_one_line_errors(model, message):
    with pytest.raises(DalDistError, match=message) as e:
        _cfg(**model)
    assert "\n" not in str(e.value)


def test_weights_are_resolved_against_the_config_file(tmp_path):
    (tmp_path / "run.yaml").write_text("pool: pool\nmodel: {name: resnet18, weights: w/r18.pt, "
                                       "normalize: {mean: [0.5], std: [0.25]}}\nstrategy: {name: bald}\n"
                                       "budget: 2\nrounds: 1\n")
    cfg = load_config(tmp_path / "run.yaml")
    assert cfg.model.weights == str(tmp_path / "w" / "r18.pt")
    spec = cfg.model.normalize_spec()
    assert spec == {"mean": [0.5], "std": [0.25]}
    assert default_config("resnet18", 3, normalize=spec).mean == (0.5, 0.5, 0.5)
    assert default_config("resnet18", 3, normalize=spec).std == (0.25, 0.25, 0.25)
