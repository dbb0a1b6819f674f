"""Checkpoints: round trip, weights_only refusal of pickled code, architecture checks."""

import pickle

import pytest
import torch

from dal_dist.errors import DalDistError
from dal_dist.models import build_model, default_config, load_checkpoint, save_checkpoint


@pytest.fixture(params=["mnist-cnn", "resnet18"])
def model(request):
    size = 28 if request.param == "mnist-cnn" else 16
    return build_model(default_config(request.param, 10, image_size=size, seed=3))


def _input(model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    return torch.randn(n, c.in_channels, c.image_size, c.image_size, generator=g)


def test_checkpoint_round_trip(tmp_path, model):
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, extra={"round": 2})
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    x = _input(model)
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 10)), path)
    payload = torch.load(path, weights_only=True)
    payload["config"] = payload["config"].replace('"num_classes": 10', '"num_classes": 7')
    torch.save(payload, path)
    with pytest.raises(DalDistError, match="does not fit architecture 'mnist-cnn'.*fc2.weight"):
        load_checkpoint(path)
    with pytest.raises(DalDistError, match="holds model 'mnist-cnn', expected 'resnet18'"):
        save_checkpoint(build_model(default_config("mnist-cnn", 10)), path)
        load_checkpoint(path, expect_name="resnet18")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "dal-dist-checkpoint/1", "config": "{}", "state_dict": {}, "x": _Evil()}, path)
    with pytest.raises(DalDistError, match="refused or unreadable with weights_only=True"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DalDistError, match="weights_only"):
        load_checkpoint(path)
