"""torchvision architectures by name: backbone = the network without its classifier, local weights, no download.

Structure is checked for every architecture on the meta device (no memory, no init cost); numbers are
checked for ResNet-18 only: with a seeded torchvision state_dict its features equal torchvision's own.
"""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import StochasticDepth

from dal_dist.errors import DalDistError
from dal_dist.models import (IMAGENET_MEAN, IMAGENET_STD, build_model, default_config, load_checkpoint, mc_head_probs,
                             model_factory, preprocess, save_checkpoint)

TORCHVISION = ["resnet18", "resnet34", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16"]
WIDTH = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "efficientnet_b0": 1280, "convnext_tiny": 768,
         "vit_b_16": 768}


def _meta_pair(name, num_classes=5):
    """(torchvision's network, ours) for `name`, built on the meta device: shapes only, no init cost."""
    with torch.device("meta"):
        return getattr(torchvision.models, name)(), model_factory(name)(default_config(name, num_classes))


@pytest.mark.parametrize("name", TORCHVISION)
def test_backbone_is_the_torchvision_network_without_its_classifier(name):
    """Every key of torchvision's state_dict but the classifier's maps to one of ours, same shape; the head is new."""
    tv, ours = _meta_pair(name)
    own = ours.state_dict()
    head = ours.head_keys()
    assert head == {"fc.weight", "fc.bias"} and own["fc.weight"].shape == (5, WIDTH[name])
    mapped = {ours.torchvision_key(k): tuple(v.shape) for k, v in own.items() if k not in head}
    theirs = {k: tuple(v.shape) for k, v in tv.state_dict().items() if not k.startswith(ours.torchvision_classifier)}
    assert mapped == theirs
    assert ours.embed_dim == WIDTH[name]
    cfg = ours.config
    assert (cfg.in_channels, cfg.image_size, cfg.mean, cfg.std) == (3, 224, IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("name", TORCHVISION)
def test_all_dropout_is_in_the_head(name):
    """The backbone samples nothing (dropout and stochastic depth at 0): backbone-once MC dropout stays exact."""
    _, ours = _meta_pair(name)
    head_modules = {id(ours.drop)}
    for mod_name, m in ours.named_modules():
        if isinstance(m, (nn.Dropout, StochasticDepth)) and id(m) not in head_modules:
            assert m.p == 0.0, f"{name}: {mod_name} samples with p={m.p}"
    assert ours.drop.p == 0.5


def test_resnet18_with_torchvision_weights_has_torchvision_features(tmp_path):
    """uint8 images → preprocess (ImageNet mean/std) → our backbone == torchvision's model, fc removed."""
    torch.manual_seed(123)
    tv = torchvision.models.resnet18().eval()
    torch.save(tv.state_dict(), tmp_path / "r18.pt")
    model = build_model(default_config("resnet18", 4, image_size=64, weights=tmp_path / "r18.pt"))
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    x_ours = preprocess(images, model.config)
    x_tv = (images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    tv.fc = nn.Identity()
    with torch.no_grad():
        ours, theirs = model.features(x_ours), tv(x_tv)
    assert ours.shape == (3, 512)
    assert torch.nn.functional.cosine_similarity(ours, theirs).min() >= 0.999
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # The head is new, seeded by the config, and sized for the classes; the checkpoint keeps the weights.
    assert model.fc.weight.shape == (4, 512)
    save_checkpoint(model, tmp_path / "m.pt")
    again = load_checkpoint(tmp_path / "m.pt")
    assert again.config.weights == str(tmp_path / "r18.pt")
    with torch.no_grad():
        torch.testing.assert_close(again.features(x_ours), ours)
    (tmp_path / "r18.pt").unlink()  # a checkpoint never reads its weights file again
    load_checkpoint(tmp_path / "m.pt")


def test_weights_of_another_architecture_are_a_one_line_error_naming_keys(tmp_path):
    torch.save(torchvision.models.efficientnet_b0().state_dict(), tmp_path / "effnet.pt")
    with pytest.raises(DalDistError) as e:
        build_model(default_config("resnet18", 4, image_size=32, weights=tmp_path / "effnet.pt"))
    msg = str(e.value)
    assert "\n" not in msg and "do not fit model 'resnet18'" in msg
    assert "missing keys ['bn1.bias'" in msg and "unexpected keys ['classifier.1.bias'" in msg
    assert "'features.0.0.weight'" in msg and "(+356 more)" in msg
    assert "weights of another architecture?" in msg


def test_weights_file_problems_are_one_line_errors(tmp_path):
    cfg = lambda w: default_config("resnet18", 4, image_size=32, weights=w)  # noqa: E731
    with pytest.raises(DalDistError, match="file not found"):
        build_model(cfg(tmp_path / "none.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DalDistError, match="refused or unreadable with weights_only=True"):
        build_model(cfg(tmp_path / "junk.pt"))
    save_checkpoint(build_model(default_config("resnet18", 4, image_size=32)), tmp_path / "ckpt.pt")
    with pytest.raises(DalDistError, match="is a dal-dist checkpoint, not a state_dict"):
        build_model(cfg(tmp_path / "ckpt.pt"))
    sd = torchvision.models.resnet18().state_dict()
    sd["conv1.weight"] = sd["conv1.weight"][:, :, :3, :3].clone()
    del sd["layer4.1.bn2.running_var"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "edited.pt")
    with pytest.raises(DalDistError, match=r"\(missing keys \['layer4.1.bn2.running_var'\]; unexpected keys "
                                           r"\['extra.weight'\]; shape mismatch \(file vs model\) conv1.weight "
                                           r"\(64, 3, 3, 3\) vs \(64, 3, 7, 7\)\)$"):
        build_model(cfg(tmp_path / "edited.pt"))


def test_grey_models_adapt_the_first_convolution():
    """in_channels=1 swaps the first conv (ResNet: conv1; others: the first Conv2d found)."""
    for name in ("resnet18", "efficientnet_b0"):
        with torch.device("meta"):
            m = model_factory(name)(default_config(name, 3, in_channels=1))
        first = next(p for k, p in m.state_dict().items() if p.ndim == 4)
        assert first.shape[1] == 1
        assert m.config.mean == (sum(IMAGENET_MEAN) / 3,)


def test_vit_size_must_fit_its_patches():
    with pytest.raises(DalDistError, match="multiple of the 16-px patch"):
        build_model(default_config("vit_b_16", 3, image_size=40))


def test_mc_head_on_a_torchvision_backbone_is_seeded_and_normalised():
    model = build_model(default_config("resnet18", 3, image_size=32, seed=1))
    f = model.features(torch.randn(2, 3, 32, 32))
    torch.manual_seed(0)
    a = mc_head_probs(model, f, 4)
    torch.manual_seed(0)
    assert torch.equal(a, mc_head_probs(model, f, 4))
    assert torch.allclose(a.sum(-1), torch.ones(4, 2))
