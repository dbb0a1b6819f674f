"""Scoring fixtures: one mnist-cnn checkpoint per module, a small real-MNIST pool."""

from __future__ import annotations

import pytest

from dal_dist.models import build_model, default_config, save_checkpoint
from dal_dist.pool import write_pool
from scoring_helpers import mnist


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "mnist-cnn.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 10, seed=0)), path)
    return path


@pytest.fixture
def small_pool(tmp_path, mnist_test_dir):
    """120 real MNIST images in two raw-pixel files."""
    x, y = mnist(mnist_test_dir, 120)
    write_pool(tmp_path / "pool", x, y, chunk_rows=64)
    return tmp_path / "pool"
