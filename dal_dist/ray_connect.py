"""Joining a Ray cluster, or starting a local one that listens on loopback only.

Every place in dal-dist that needs Ray calls `connect`: with an address (or RAY_ADDRESS, as under
`ray job submit`) it joins that cluster as it is; without one it starts a local Ray whose servers (GCS,
raylet, object manager, core workers, dashboard and runtime-env agents) all bind to 127.0.0.1, with the
dashboard off and token authentication on (Ray >= 2.52's default).

How: `ray.init(_node_ip_address="127.0.0.1")` is not enough, Ray resolves a loopback address to the
machine's routable IP and then binds its gRPC servers to every interface. Ray's single-machine mode (the
one it uses on macOS/Windows, switched by RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) takes 127.0.0.1 as the node
address, and every server follows it; the processes Ray starts inherit the variable.
`tests/system/test_local_ray.py` lists the listening sockets of such a cluster.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def starts_local_cluster(address: str | None) -> bool:
    """Whether `connect(address)` would start a local Ray (no address given, none in RAY_ADDRESS)."""
    return address in (None, "", "local") and not os.environ.get("RAY_ADDRESS")


def connect(address: str | None = None, **init_kwargs: Any) -> tuple[Any, bool]:
    """The `ray` module, initialized; and whether this call started a local cluster (no autoscaler grows it)."""
    import ray

    if ray.is_initialized():
        return ray, False
    if starts_local_cluster(address):
        init_kwargs.setdefault("include_dashboard", False)
        with _single_machine_mode():
            ray.init(**init_kwargs)
        return ray, True
    ray.init(address=address, **init_kwargs)
    return ray, False


@contextmanager
def _single_machine_mode() -> Iterator[None]:
    """While Ray starts, this process and every process it starts take 127.0.0.1 as the node address.

    Restored afterwards, so a later `ray start` or `ray job submit` run from this process is not told that
    multi-node clusters are off."""
    before = os.environ.get(SINGLE_MACHINE_ENV)
    constants = sys.modules.get("ray._private.ray_constants")  # read at Ray's import: set it if that happened
    was = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[SINGLE_MACHINE_ENV] = "0"
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = before
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = was
