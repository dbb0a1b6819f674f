"""Synthetic pool: reproducible across chunk sizes, every image a deformed seed digit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from pool_helpers import decode_all

from dal_dist.pool import pool_files, validate_pool
from dal_dist.pool.synth import SYNTH_BLOCK, load_seed_digits, synth_pool


def test_synth_is_reproducible_across_chunk_sizes_and_deforms_seeds(tmp_path: Path) -> None:
    n = 2 * SYNTH_BLOCK + 300  # two full blocks and a partial one
    synth_pool(n, tmp_path / "a", seed=7, chunk_size=SYNTH_BLOCK)
    synth_pool(n, tmp_path / "b", seed=7, chunk_size=4 * SYNTH_BLOCK)
    synth_pool(n, tmp_path / "c", seed=8)
    ta, tb, tc = (pq.read_table(tmp_path / d) for d in "abc")
    assert ta.equals(tb)
    def file_bytes(d: str) -> list[bytes]:
        return [Path(f).read_bytes() for f in pool_files(tmp_path / d)]

    assert file_bytes("a") == file_bytes("b")
    assert not ta.column("image").equals(tc.column("image"))
    labels = ta.column("label").to_numpy()
    assert labels.min() >= 0 and labels.max() <= 9 and len(np.unique(labels)) == 10
    seeds, _ = load_seed_digits()
    seed_bytes = {s.astype(np.uint8).tobytes() for s in seeds}
    synth_bytes = ta.column("image").to_pylist()
    assert sum(b in seed_bytes for b in synth_bytes) == 0  # every image is deformed
    info = validate_pool(tmp_path / "a")
    assert info.rows == n and info.num_classes == 10 and info.image_shape == (28, 28, 1)
    _, images = decode_all(tmp_path / "a")
    assert 20 < images.mean() < 80  # digits on black, not blank or saturated (MNIST mean is ~33)
