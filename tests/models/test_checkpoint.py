"""Checkpoints: round trip, weights_only refusal of pickled code, architecture checks."""

import json
import pickle

import pytest
import torch

from dal_dist.errors import DalDistError
from dal_dist.models import build_model, default_config, load_checkpoint, save_checkpoint


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


def _format1_checkpoint(path, model, name="resnet18"):
    """A checkpoint as dal-dist wrote it before the torchvision architectures (format 1, no factory/weights)."""
    cfg = json.loads(model.config.to_json())
    cfg.pop("factory"), cfg.pop("weights")
    cfg["name"] = name
    torch.save({"format": "dal-dist-checkpoint/1", "config": json.dumps(cfg, sort_keys=True),
                "state_dict": model.state_dict(), "extra": "{}"}, path)


@pytest.mark.parametrize("size, extra, loads_as", [(32, {}, "resnet18-small"), (96, {}, "resnet18"),
                                                   (96, {"small_input": True}, "resnet18-small")])
def test_format_1_resnet18_checkpoints_load_as_what_they_are(tmp_path, size, extra, loads_as):
    """Format 1's "resnet18" had a 3x3 stem without max-pool for inputs <= 64 px (or extra.small_input)."""
    torch.manual_seed(0)
    original = build_model(default_config(loads_as, 10, image_size=size, normalize="half", seed=4, **extra))
    _format1_checkpoint(tmp_path / "old.pt", original)
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.config.name == loads_as and loaded.config.mean == (0.5, 0.5, 0.5)
    x = torch.randn(2, 3, size, size)
    assert torch.equal(loaded(x), original.eval()(x))
    with pytest.raises(DalDistError, match=f"holds model '{loads_as}', expected 'resnet18-x'"):
        load_checkpoint(tmp_path / "old.pt", expect_name="resnet18-x")
    # Re-saved, it is a format-2 checkpoint under its new name.
    save_checkpoint(loaded, tmp_path / "new.pt")
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    assert payload["format"] == "dal-dist-checkpoint/2" and json.loads(payload["config"])["name"] == loads_as


def test_format_1_mnist_cnn_checkpoints_still_load(tmp_path):
    model = build_model(default_config("mnist-cnn", 10, seed=1))
    _format1_checkpoint(tmp_path / "old.pt", model, name="mnist-cnn")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")(x), model(x))
