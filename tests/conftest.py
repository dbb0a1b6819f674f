"""Shared fixtures: one local Ray per test session, paths to the real MNIST files in ../shared."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MNIST_TEST = SHARED / "data" / "mnist-test"

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
# A suite started in the background (`nohup ... &`) inherits SIGINT ignored, and so would every process it
# starts (an ignored signal survives exec): the tests that Ctrl-C a real `dal-dist` child need it delivered.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU local Ray started once per session the way dal-dist starts one (loopback only, token auth on,
    dashboard off)."""
    from dal_dist.ray_connect import connect

    ray, _ = connect(None, num_cpus=2, log_to_driver=False,
                     runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}})
    yield ray
    # Left running for the rest of the session; ray shuts down at interpreter exit.


@pytest.fixture(scope="session")
def mnist_test_dir() -> Path:
    """The real MNIST test-set IDX files (tests may read ../shared; the product never does)."""
    if not (MNIST_TEST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found at {MNIST_TEST}")
    return MNIST_TEST
