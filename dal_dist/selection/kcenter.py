"""Exact k-center greedy (core-set selection) on one node: FAISS init, then a bandwidth-bound greedy loop.

References: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
Approach", ICLR 2018 (the greedy 2-approximation to the k-center problem, their Algorithm 1).

Memory: the embeddings once (in the storage dtype) plus ~30 bytes per row; never an N×N, N×L or
k×N matrix. The labeled set is held once more in float32 for the FAISS index.

Exactness argument (why the picks equal a float64 brute force on the stored values):
* `MinDistances.min_d2[i]` is always the float64 value of sum_j (x_ij - c_j)^2 for some center c
  (computed directly from differences, never via the ||x||^2 - 2x.c + ||c||^2 expansion), so it is
  an upper bound of the true squared distance to the nearest center, and equal to it once
  `verified[i]` is set.
* Each greedy update needs x_i . c for all rows; it is computed by one float32 GEMV (the only pass
  over the embeddings).  For any summation order |fl(x.c) - x.c| <= gamma_d * ||x|| ||c|| with
  gamma_d ~ d * 2^-24.  A row is skipped only when that bound proves ||x_i - c||^2 >= min_d2[i]
  (so the running minimum cannot change); every other row is recomputed exactly in float64.
  In the steady state that is a few rows per pick, so the float64 work is negligible.
* FAISS returns the two nearest labeled points per row with float32 expansion distances.  The
  exact float64 distance to the first is stored; the row is marked verified when the second
  neighbour's distance minus FAISS's error bound is still >= it (then no other labeled point can be
  nearer).  Unverified rows (near-ties) are checked against the whole labeled set lazily, only when
  they reach the top of the argmax; verifying the argmax until it is a verified row gives the exact
  argmax because stored values only over-estimate.
* Ties are broken by the lowest row index (`np.argmax` returns the first maximum; shards report their lowest).
With float16/bfloat16 storage the embeddings (labeled too) are rounded once on load; the picks are
then exact for the rounded vectors.

Where the loop runs (`loop=`): "host" keeps this state in NumPy and moves only the GEMV to torch;
"device" keeps all of it on a torch device (`kcenter_device.DeviceMinDistances`, same argument, same
picks); "auto" takes the device loop on CUDA and the host loop on the CPU, where NumPy is faster.
"""

from __future__ import annotations

import math

import numpy as np

from dal_dist.device import torch_device
from dal_dist.errors import DalDistError

_U32 = 2.0**-24  # unit roundoff of float32
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
LOOPS = ("auto", "host", "device")


def _gamma(d: int) -> float:
    """A safe bound on the relative error of a float32 dot product / norm of length d (plus slack)."""
    return (d + 8) * _U32 * 1.01


def as_storage(embeddings: np.ndarray, storage_dtype: str | None = None) -> np.ndarray:
    """Embeddings in the storage dtype (bfloat16 kept as its uint16 bit pattern); no copy when it matches."""
    x = np.asarray(embeddings)
    if storage_dtype is None:
        storage_dtype = "float16" if x.dtype == np.float16 else "bfloat16" if x.dtype == np.uint16 else "float32"
    if storage_dtype not in STORAGE_DTYPES:
        raise DalDistError(f"storage dtype {storage_dtype!r}: expected one of {list(STORAGE_DTYPES)}")
    if storage_dtype == "bfloat16":
        if x.dtype == np.uint16:
            return np.ascontiguousarray(x)
        import torch

        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16).view(torch.uint16).numpy()
    return np.ascontiguousarray(x, dtype=np.dtype(storage_dtype))


def to_float(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Stored rows (float32, float16 or bfloat16 bits) as float32/float64 values, exactly."""
    if x.dtype == np.uint16:
        x = (x.astype(np.uint32) << 16).view(np.float32)
    return x.astype(dtype, copy=False)


class MinDistances:
    """Exact squared distance from every candidate row to its nearest center, kept up to date per pick.

    Pure math (no Ray): the single-node greedy and each Ray shard actor own one of these.  State is
    numpy on the host; only the per-pick GEMV moves to torch (float16/bfloat16 or CUDA), because mixing
    torch's OpenMP pool with OpenBLAS in one loop makes both spin against each other on small hosts.
    """

    def __init__(self, embeddings: np.ndarray, labeled: np.ndarray | None = None, *,
                 device: str | None = "auto", block_rows: int | None = None) -> None:
        self.x = embeddings  # storage dtype, see as_storage
        n, d = embeddings.shape
        # Blocks of float64 temporaries stay ~16 MB, so init/recompute add little to peak memory.
        self.block_rows = int(block_rows or max(1024, (16 << 20) // (8 * d)))
        self.n, self.d = n, d
        self.gamma = _gamma(d)
        self.labeled = labeled if labeled is not None and len(labeled) else None
        self.norm2 = np.empty(n, dtype=np.float64)
        for s in range(0, n, self.block_rows):
            xb = to_float(self.x[s:s + self.block_rows], np.float64)
            self.norm2[s:s + len(xb)] = np.einsum("ij,ij->i", xb, xb)
        self.min_d2 = np.full(n, np.inf)
        self.verified = np.ones(n, dtype=bool)
        if self.labeled is not None:
            self._init_from_labeled(self.labeled)
        # skip_below[i]: a float32 lower bound of ((1-g)*norm2 - min_d2)/2; row i can only be updated by
        # center c when fl(x_i.c) - (1-g)*|c|^2/2 > skip_below[i]  (see the module docstring).
        self.skip_below = np.empty(n, dtype=np.float32)
        self._refresh_skip(slice(None))
        self._dot = np.empty(n, dtype=np.float32)
        self._mask = np.empty(n, dtype=bool)
        self._gemv = _make_gemv(self.x, device, self.block_rows)

    # --- initial distances to the labeled set -------------------------------------------------
    def _init_from_labeled(self, labeled: np.ndarray) -> None:
        """Nearest-labeled distances by blocked FAISS k=2 search, then exact float64 for the nearest."""
        try:
            import faiss
        except ImportError:
            raise DalDistError("k-center with a labeled set needs faiss: pip install 'dal-dist[cpu]' "
                               "(or 'dal-dist[gpu]' on a CUDA host)") from None

        lab32 = np.ascontiguousarray(to_float(labeled))
        lab64 = lab32.astype(np.float64)
        lab_norm_max = float(np.einsum("ij,ij->i", lab64, lab64).max())
        index = faiss.IndexFlatL2(self.d)
        index.add(lab32)
        kk = min(2, len(lab32))
        g_faiss = 2 * self.gamma  # both norms, the dot and the two sums of the expansion in float32
        for s in range(0, self.n, self.block_rows):
            q = np.ascontiguousarray(to_float(self.x[s:s + self.block_rows]))
            e = s + len(q)
            dist, nn = index.search(q, kk)
            diff = q.astype(np.float64) - lab64[nn[:, 0]]
            exact = np.einsum("ij,ij->i", diff, diff)
            self.min_d2[s:e] = exact
            if kk == 2:
                bound = dist[:, 1].astype(np.float64) - g_faiss * (self.norm2[s:e] + lab_norm_max)
                self.verified[s:e] = bound >= exact

    def _refresh_skip(self, rows) -> None:
        with np.errstate(invalid="ignore"):
            h = ((1.0 - self.gamma) * self.norm2[rows] - self.min_d2[rows]) * 0.5
        h32 = h.astype(np.float32)
        # Round toward -inf so the stored threshold never exceeds the float64 one.
        too_big = h32.astype(np.float64) > h
        self.skip_below[rows] = np.where(too_big, np.nextafter(h32, np.float32(-np.inf)), h32)

    # --- the greedy step ----------------------------------------------------------------------
    def row(self, i: int) -> np.ndarray:
        """Row i as float64 (exactly the stored values), for broadcasting as the next center."""
        return to_float(self.x[i:i + 1], np.float64)[0]

    def add_center(self, center: np.ndarray) -> None:
        """Lower every row's nearest-center distance with a new center (exact, see module docstring)."""
        c64 = np.asarray(center, dtype=np.float64)
        dots = self._gemv(c64.astype(np.float32), self._dot)
        c_norm2 = float(c64 @ c64)
        # fl(p) - C; the float32 rounding of this subtraction is covered by the slack in gamma.
        np.subtract(dots, np.float32((1.0 - self.gamma) * c_norm2 * 0.5), out=dots)
        np.greater(dots, self.skip_below, out=self._mask)
        rows = np.flatnonzero(self._mask)
        for s in range(0, len(rows), self.block_rows):
            r = rows[s:s + self.block_rows]
            diff = to_float(self.x[r], np.float64) - c64
            d2 = np.einsum("ij,ij->i", diff, diff)
            self.min_d2[r] = np.minimum(self.min_d2[r], d2)
            self._refresh_skip(r)

    def pick(self, i: int) -> None:
        """Take row i out of the candidates and make it a center."""
        self.remove(i)
        self.add_center(self.row(i))

    def remove(self, i: int) -> None:
        """Take row i out of the candidates (it has been picked)."""
        self.min_d2[i] = -np.inf
        self.verified[i] = True
        self.skip_below[i] = np.inf

    def _verify(self, i: int) -> None:
        x = self.row(i)
        best = np.inf
        for s in range(0, len(self.labeled), self.block_rows):
            diff = to_float(self.labeled[s:s + self.block_rows], np.float64) - x
            best = min(best, float(np.einsum("ij,ij->i", diff, diff).min()))
        self.min_d2[i] = min(self.min_d2[i], best)
        self.verified[i] = True
        self._refresh_skip(slice(i, i + 1))

    def farthest(self) -> tuple[float, int]:
        """(squared distance, row) of the candidate farthest from its nearest center; ties -> lowest row.

        Returns (-inf, -1) when no candidate is left.
        """
        while True:
            i = int(np.argmax(self.min_d2))  # first maximum = lowest row on ties
            d2 = float(self.min_d2[i])
            if d2 == -np.inf:
                return -np.inf, -1
            if self.verified[i]:
                return d2, i
            self._verify(i)


def _make_gemv(x: np.ndarray, device: str | None, block_rows: int):
    """Return gemv(c32, out) -> out = x @ c in float32: the one pass over the embeddings per pick.

    CPU float32: OpenBLAS sgemv (near memory bandwidth).  CPU float16/bfloat16: torch converts
    cache-sized blocks to float32 then gemv (numpy's half conversion is ~10x slower).  CUDA: the
    embeddings are copied to the GPU once and the GEMV runs there (TF32 is not used by mv).
    """
    import torch  # imported here: shard actors on float32/CPU never need it

    from dal_dist.selection.kcenter_device import blocked_mv  # torch-only, like this function

    dev = str(torch_device(device))  # None / "auto": the GPU when there is one
    tdtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
              np.dtype(np.uint16): torch.bfloat16}[x.dtype]
    if str(dev).startswith("cuda"):
        xt = torch.from_numpy(x).view(tdtype).to(dev)
        buf = None if tdtype == torch.float32 else torch.empty((1 << 20, x.shape[1]), device=dev)
        dot = torch.empty(len(x), device=dev)

        def gemv_cuda(c32: np.ndarray, out: np.ndarray) -> np.ndarray:
            c = torch.from_numpy(c32).to(dev)
            if buf is None:
                torch.mv(xt, c, out=dot)
            else:
                blocked_mv(xt, buf, c, dot)
            out[:] = dot.cpu().numpy()
            return out
        return gemv_cuda
    if tdtype == torch.float32:
        return lambda c32, out: np.dot(x, c32, out=out)
    xt = torch.from_numpy(x).view(tdtype)
    # ~4 MB float32 block: stays in cache between copy and mv; each block is two OpenMP regions, so
    # on an oversubscribed host (other jobs on the cores) this path degrades far more than float32's.
    buf = torch.empty((max(1024, (4 << 20) // (4 * x.shape[1])), x.shape[1]))

    def gemv_half(c32: np.ndarray, out: np.ndarray) -> np.ndarray:
        blocked_mv(xt, buf, torch.from_numpy(c32), torch.from_numpy(out))
        return out
    return gemv_half


def first_center(n: int, seed: int) -> int:
    """Without a labeled set the first center is `np.random.default_rng(seed).integers(n)` (radius inf)."""
    return int(np.random.default_rng(seed).integers(n))


def min_distances(x: np.ndarray, labeled: np.ndarray | None, *, device: str | None = "auto", loop: str = "auto",
                  block_rows: int | None = None):
    """The greedy's state for storage-dtype rows: `MinDistances` (host) or `DeviceMinDistances` (see `loop`)."""
    if loop == "device" or (loop == "auto" and torch_device(device).type == "cuda"):
        from dal_dist.selection.kcenter_device import DeviceMinDistances  # imports torch

        return DeviceMinDistances(x, labeled, gamma=_gamma(x.shape[1]), device=device, block_rows=block_rows)
    return MinDistances(x, labeled, device=device, block_rows=block_rows)


def kcenter_greedy(embeddings: np.ndarray, labeled: np.ndarray | None, k: int, *, seed: int = 0,
                   device: str | None = "auto", storage_dtype: str | None = None,
                   block_rows: int | None = None, loop: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Pick k rows of `embeddings` greedily farthest from `labeled` ∪ picks (Sener & Savarese 2018).

    Returns (row indices in pick order, radius at pick time = L2 distance to the nearest center
    before the pick; non-increasing).  With no labeled set the first pick is
    `np.random.default_rng(seed).integers(N)` and its radius is `inf`.  `loop`: "auto" (all on the
    device on CUDA, NumPy on the CPU), "host" or "device" (also on a CPU device); the picks are the same.
    """
    embeddings = np.asarray(embeddings)
    check_kcenter_inputs(embeddings, labeled, k)
    if loop not in LOOPS:
        raise DalDistError(f"loop {loop!r}: expected one of {list(LOOPS)}")
    x = as_storage(embeddings, storage_dtype)
    lab = None if labeled is None or len(labeled) == 0 else as_storage(np.asarray(labeled), _dtype_name(x))
    state = min_distances(x, lab, device=device, loop=loop, block_rows=block_rows)
    picks = np.empty(k, dtype=np.int64)
    radii = np.empty(k, dtype=np.float64)
    for t in range(k):
        if t == 0 and lab is None:
            d2, i = math.inf, first_center(state.n, seed)
        else:
            d2, i = state.farthest()
        picks[t], radii[t] = i, math.sqrt(d2)
        state.pick(i)
    return picks, radii


def _dtype_name(x: np.ndarray) -> str:
    return "bfloat16" if x.dtype == np.uint16 else str(x.dtype)


def check_kcenter_inputs(embeddings: np.ndarray, labeled: np.ndarray | None, k: int) -> None:
    """Reject bad input before any work: shapes, k range, NaN/inf."""
    if embeddings.ndim != 2:
        raise DalDistError(f"embeddings: expected a 2-D array (rows × dim), got shape {embeddings.shape}")
    n, d = embeddings.shape
    if n == 0:
        raise DalDistError("embeddings: no candidate rows (empty pool)")
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise DalDistError(f"k = {k}: expected a positive integer")
    if k > n:
        raise DalDistError(f"k = {k} is larger than the number of candidates ({n})")
    bad = _first_nonfinite_row(embeddings)
    if bad is not None:
        raise DalDistError(f"embeddings: row {bad} has NaN or inf values")
    if labeled is not None and len(labeled):
        labeled = np.asarray(labeled)
        if labeled.ndim != 2 or labeled.shape[1] != d:
            raise DalDistError(f"labeled embeddings: shape {labeled.shape}, expected (L, {d})")
        bad = _first_nonfinite_row(labeled)
        if bad is not None:
            raise DalDistError(f"labeled embeddings: row {bad} has NaN or inf values")


def _first_nonfinite_row(x: np.ndarray, block: int = 65536) -> int | None:
    for s in range(0, len(x), block):
        ok = np.isfinite(x[s:s + block]).all(axis=1)
        if not ok.all():
            return s + int(np.argmin(ok))
    return None
