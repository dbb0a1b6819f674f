"""Model fixtures: one small built-in network of each kind, seeded."""

from __future__ import annotations

import pytest

from dal_dist.models import build_model, default_config


@pytest.fixture(params=["mnist-cnn", "resnet18-small"])
def model(request):
    size = 28 if request.param == "mnist-cnn" else 16
    return build_model(default_config(request.param, 10, image_size=size, seed=3))
