"""k-center greedy's state on a torch device: the distance update, running minimum and argmax stay there.

The same exact greedy as `kcenter.MinDistances` (see the exactness argument in `kcenter`), with every
per-row array a torch tensor on one device.  Per pick the host enqueues work and reads back one small
tensor (the picked row, its distance, whether it is verified and how many rows the update touched);
nothing else crosses to the host, so on a GPU a pick is one GEMV over the embeddings plus a few passes
over per-row arrays (not yet measured on a GPU; see docs/gpu.md).

How each step stays exact without a data-dependent host decision:
* The float32 GEMV and the skip test are `MinDistances.add_center`'s.  The rows the skip test cannot
  exclude are listed by `torch.nonzero_static` into a fixed-size list (`capacity`, padded with a sink
  row n whose minimum stays -inf) and recomputed exactly in float64 from differences.  The number of
  such rows comes back with the next pick; if it was above `capacity` every one of them is recomputed
  and the argmax taken again, so the picks never depend on the capacity, which then follows the
  recent counts (a few rows per pick in the steady state, many in the first picks without labels).
* The argmax is `torch.argmax` over the float64 minima: the first maximum, so ties go to the lowest row.
  A row whose nearest labeled point is not proven (near-ties at the start) is checked against the
  whole labeled set in float64 when it comes out on top, and the argmax is taken again.
* Labeled-set start: the two nearest labeled rows of every row by a blocked float64 GEMM (TF32/bf16
  switches cannot touch float64, whoever set them in this process), or by a FAISS flat index when this
  faiss build sees a GPU (`faiss.get_num_gpus() > 0`; FAISS turns reduced-precision GEMM off on its own
  handle).  The exact float64 distance to the first is stored; the row is verified when the second's
  distance minus the error bound of that computation is still >= it.

Memory on the device: the embeddings in their storage dtype, ~26 bytes per row, the labeled set in
float64 (torch start) or float32 (FAISS), blocks of float64 temporaries of `block_rows` rows, and
during the start one float64 distance tile (1 GiB on a GPU, 16 MB on the host).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dal_dist.device import torch_device
from dal_dist.errors import DalDistError

_U64 = 2.0**-53  # unit roundoff of float64
MIN_CAPACITY = 256
LABELED_KNN = ("auto", "torch", "faiss")
_TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
                np.dtype(np.uint16): torch.bfloat16}


class DeviceMinDistances:
    """Exact squared distance from every row to its nearest center, as tensors on one torch device.

    The interface of `kcenter.MinDistances` (`farthest`, `remove`, `add_center`, `row`, `pick`), so the
    single-node loop and the Ray shard actors can drive either.  `gamma` is the float32 error bound of
    kcenter's exactness argument (`kcenter._gamma(d)`; passed in because kcenter imports this module).
    `labeled_knn`: "auto" (FAISS on a GPU where faiss sees one, else torch), "torch", or "faiss" (a
    CPU index where no GPU build is there: the tests' way through the FAISS code).
    """

    def __init__(self, embeddings: np.ndarray, labeled: np.ndarray | None = None, *, gamma: float,
                 device: str | None = "auto", block_rows: int | None = None, labeled_knn: str = "auto") -> None:
        if labeled_knn not in LABELED_KNN:
            raise DalDistError(f"labeled_knn {labeled_knn!r}: expected one of {list(LABELED_KNN)}")
        self.device = torch_device(device)
        self.cuda = self.device.type == "cuda"
        n, d = embeddings.shape
        self.n, self.d, self.gamma = n, d, gamma
        # float64 temporaries of ~64 MB on a GPU, ~16 MB on the host (as MinDistances).
        self.block_rows = int(block_rows or max(1024, ((64 if self.cuda else 16) << 20) // (8 * d)))
        self.x = _to_device(embeddings, self.device)  # storage dtype; shares memory on the CPU
        # Row n is a sink: padding of the fixed-size row lists points there; its minimum stays -inf.
        self.norm2 = torch.zeros(n + 1, dtype=torch.float64, device=self.device)
        for s in range(0, n, self.block_rows):
            e = min(n, s + self.block_rows)
            self.norm2[s:e] = self.x[s:e].double().square().sum(1)
        self.min_d2 = torch.full((n + 1,), math.inf, dtype=torch.float64, device=self.device)
        self.min_d2[n] = -math.inf
        self.verified = torch.ones(n + 1, dtype=torch.bool, device=self.device)
        self.labeled = None
        if labeled is not None and len(labeled):
            self.labeled = _to_device(labeled, self.device)
            self._init_from_labeled(labeled_knn)
        self.skip_below = torch.empty(n + 1, dtype=torch.float32, device=self.device)
        self._refresh_skip(slice(None))
        self._dot = torch.empty(n, dtype=torch.float32, device=self.device)
        self._mask = torch.empty(n, dtype=torch.bool, device=self.device)
        self._gemv = _make_gemv(self.x, self.cuda)
        self.capacity = min(n, MIN_CAPACITY)
        self._pending = None  # (rows the last update touched, its center) until the host reads the count

    # --- initial distances to the labeled set -------------------------------------------------
    def _init_from_labeled(self, labeled_knn: str) -> None:
        """Nearest-labeled distances: approximate two nearest (float64 GEMM or FAISS), exact float64 first."""
        lab = self.labeled
        kk = min(2, len(lab))
        lab_norm2 = torch.cat([lab[s:s + self.block_rows].double().square().sum(1)
                               for s in range(0, len(lab), self.block_rows)])
        lab_norm_max = lab_norm2.max()
        index = _faiss_index(lab, self.cuda, force=labeled_knn == "faiss") if labeled_knn != "torch" else None
        if index is None:
            lab64 = lab.double()
            budget = (1 << 30) if self.cuda else (16 << 20)  # bytes of one float64 distance tile
        # The error bound of the approximate distances: float32 expansion in FAISS (as MinDistances), or
        # its float64 analogue (norms, dot and the two sums) for the torch GEMM.
        err = 2 * self.gamma if index is not None else 2 * (self.d + 8) * _U64 * 1.01
        for s in range(0, self.n, self.block_rows):
            e = min(self.n, s + self.block_rows)
            if index is not None:
                dist, nn = _search_faiss(index, self.x[s:e], kk, self.device)
            else:
                dist, nn = _search_torch(self.x[s:e].double(), self.norm2[s:e], lab64, lab_norm2, kk, budget)
            exact = (self.x[s:e].double() - lab[nn[:, 0]].double()).square().sum(1)
            self.min_d2[s:e] = exact
            if kk == 2:
                self.verified[s:e] = dist[:, 1] - err * (self.norm2[s:e] + lab_norm_max) >= exact

    def _refresh_skip(self, rows) -> None:
        # skip_below[i]: a float32 lower bound of ((1-g)*norm2 - min_d2)/2, see kcenter's module docstring.
        h = ((1.0 - self.gamma) * self.norm2[rows] - self.min_d2[rows]) * 0.5
        h32 = h.float()
        # Round toward -inf so the stored threshold never exceeds the float64 one.
        self.skip_below[rows] = torch.where(h32.double() > h, torch.nextafter(h32, torch.full_like(h32, -math.inf)),
                                            h32)

    # --- the greedy step ----------------------------------------------------------------------
    def row(self, i: int) -> np.ndarray:
        """Row i as float64 on the host (what a Ray shard sends to the others)."""
        return self.x[i].double().cpu().numpy()

    def pick(self, i: int) -> None:
        """Take row i out of the candidates and make it a center, without a host copy of the row."""
        self.remove(i)
        self.add_center(self.x[i])

    def add_center(self, center) -> None:
        """Lower every row's nearest-center distance with a new center (a host array or a device tensor).

        Only enqueues device work: how many rows were touched is read with the next `farthest()`.
        """
        if self._pending is not None:  # two updates without a farthest() in between: settle the first
            self._settle(int(self._pending[0]))
        c64 = torch.as_tensor(center, device=self.device).to(torch.float64)
        dots = self._gemv(c64.float(), self._dot)
        # fl(p) - C; the float32 rounding of this subtraction is covered by the slack in gamma.
        torch.sub(dots, ((1.0 - self.gamma) * 0.5 * (c64 @ c64)).float(), out=dots)
        torch.gt(dots, self.skip_below[:self.n], out=self._mask)
        rows = torch.nonzero_static(self._mask, size=self.capacity, fill_value=self.n).squeeze(1)
        for s in range(0, self.capacity, self.block_rows):
            self._update_rows(rows[s:s + self.block_rows], c64)
        self._pending = (self._mask.sum(), c64)

    def _update_rows(self, rows: torch.Tensor, c64: torch.Tensor) -> None:
        d2 = (self.x[rows.clamp(max=self.n - 1)].double() - c64).square().sum(1)
        self.min_d2[rows] = torch.minimum(self.min_d2[rows], d2)  # the sink stays -inf
        self._refresh_skip(rows)

    def _settle(self, touched: int) -> bool:
        """Finish the pending update given how many rows it touched; True when the list had overflowed."""
        c64 = self._pending[1]
        self._pending = None
        overflow = touched > self.capacity
        if overflow:  # the rows past the fixed-size list: recompute every touched row (min is idempotent)
            rows = torch.nonzero(self._mask).squeeze(1)
            for s in range(0, len(rows), self.block_rows):
                self._update_rows(rows[s:s + self.block_rows], c64)
        # Room for twice the last count, so a slowly shrinking count never overflows.
        self.capacity = min(self.n, max(MIN_CAPACITY, 1 << (2 * touched).bit_length()))
        return overflow

    def remove(self, i: int) -> None:
        """Take row i out of the candidates (it has been picked)."""
        self.min_d2[i] = -math.inf
        self.verified[i] = True
        self.skip_below[i] = math.inf

    def _verify(self, i: int) -> None:
        x = self.x[i].double()
        best = torch.stack([(self.labeled[s:s + self.block_rows].double() - x).square().sum(1).min()
                            for s in range(0, len(self.labeled), self.block_rows)]).min()
        self.min_d2[i] = torch.minimum(self.min_d2[i], best)
        self.verified[i] = True
        self._refresh_skip(slice(i, i + 1))

    def farthest(self) -> tuple[float, int]:
        """(squared distance, row) of the candidate farthest from its nearest center; ties -> lowest row.

        Returns (-inf, -1) when no candidate is left.  One device-to-host read in the steady state.
        """
        while True:
            i = torch.argmax(self.min_d2[:self.n])  # first maximum = lowest row on ties
            parts = [i.double(), self.min_d2[i], self.verified[i].double()]
            if self._pending is not None:
                parts.append(self._pending[0].double())
            got = torch.stack(parts).tolist()
            if len(got) == 4 and self._settle(int(got[3])):
                continue  # the argmax was taken before every touched row was updated
            d2, row = got[1], int(got[0])
            if d2 == -math.inf:
                return -math.inf, -1
            if got[2]:
                return d2, row
            self._verify(row)


def _to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Storage-dtype rows (bfloat16 as uint16 bits) as a tensor of that dtype on `device`."""
    return torch.from_numpy(np.ascontiguousarray(x)).view(_TORCH_DTYPE[x.dtype]).to(device)


def _make_gemv(x: torch.Tensor, cuda: bool):
    """Return gemv(c32, out) -> out = x @ c in float32 (no TF32: cuBLAS/CPU gemv, not a GEMM)."""
    if x.dtype == torch.float32:
        return lambda c, out: torch.mv(x, c, out=out)
    # float16/bfloat16: float32 blocks (~256 MB on a GPU, ~4 MB in cache on the host), then gemv.
    rows = max(1024, ((256 << 20) if cuda else (4 << 20)) // (4 * x.shape[1]))
    buf = torch.empty((max(1, min(rows, len(x))), x.shape[1]), dtype=torch.float32, device=x.device)

    return lambda c, out: blocked_mv(x, buf, c, out)


def blocked_mv(x: torch.Tensor, buf: torch.Tensor, c: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = x @ c for float16/bfloat16 rows: each block of rows copied to float32 `buf` first (mv in float32)."""
    for s in range(0, len(x), len(buf)):
        e = min(len(x), s + len(buf))
        buf[:e - s].copy_(x[s:e])
        torch.mv(buf[:e - s], c, out=out[s:e])
    return out


def _search_torch(q: torch.Tensor, q_norm2: torch.Tensor, lab: torch.Tensor, lab_norm2: torch.Tensor, kk: int,
                  budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kk nearest labeled rows of each query row by blocked float64 ||q||^2 + ||l||^2 - 2 q.l."""
    step = max(1, budget // (8 * len(q)))
    best_d = best_i = None
    for s in range(0, len(lab), step):
        d2 = q_norm2[:, None] + lab_norm2[None, s:s + step] - 2.0 * (q @ lab[s:s + step].T)
        v, j = torch.topk(d2, min(kk, d2.shape[1]), dim=1, largest=False)
        if best_d is None:
            best_d, best_i = v, j + s
            continue
        both_d, both_i = torch.cat([best_d, v], 1), torch.cat([best_i, j + s], 1)
        best_d, pos = torch.topk(both_d, kk, dim=1, largest=False)
        best_i = both_i.gather(1, pos)
    return best_d, best_i


def _faiss_index(lab: torch.Tensor, cuda: bool, *, force: bool):
    """A FAISS flat L2 index of the labeled rows on the GPU when faiss sees one; else None (torch does it).

    `force` (tests, benchmarks): a CPU index when no GPU build is there, to exercise the same code path.
    """
    try:
        import faiss
    except ImportError:
        if force:
            raise DalDistError("labeled_knn='faiss': faiss is not installed (pip install 'dal-dist[cpu]' "
                               "or 'dal-dist[gpu]')") from None
        return None
    try:
        gpus = faiss.get_num_gpus() if cuda and hasattr(faiss, "GpuIndexFlatL2") else 0
    except Exception:  # a GPU build whose CUDA libraries do not load here
        gpus = 0
    if gpus > 0:
        res = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatL2(res, lab.shape[1])
        index.referenced_objects = [res]  # the resources must outlive the index
    elif force:
        index = faiss.IndexFlatL2(lab.shape[1])
    else:
        return None
    index.add(np.ascontiguousarray(lab.float().cpu().numpy()))
    return index


def _search_faiss(index, q: torch.Tensor, kk: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    dist, nn = index.search(np.ascontiguousarray(q.float().cpu().numpy()), kk)
    return torch.from_numpy(dist).to(device, torch.float64), torch.from_numpy(nn).to(device)
