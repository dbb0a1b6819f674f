"""k-center greedy with the whole loop on a torch device: the same picks as the NumPy loop and a float64
brute force (ties to the lowest row), on CPU tensors here; the CUDA tests run where a GPU is visible."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from dal_dist.errors import DalDistError
from dal_dist.selection.kcenter import MinDistances, _gamma, as_storage, kcenter_greedy, min_distances, to_float
from dal_dist.selection.kcenter_device import DeviceMinDistances
from selection_helpers import brute_kcenter, loop_picks, near_tie_points

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _data(seed: int, n: int = 2000, d: int = 24, labeled: int = 37):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.1, 10)
    return x, rng.standard_normal((labeled, d)).astype(np.float32)


def _reference(x, lab, k, seed, dtype):
    """Brute force on the values as stored (float16 rounds them once)."""
    rounded = to_float(as_storage(x, dtype), np.float64)
    rounded_lab = None if lab is None else to_float(as_storage(lab, dtype), np.float64)
    return brute_kcenter(rounded, rounded_lab, k, seed)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("with_labeled", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_device_loop_equals_numpy_loop_and_brute_force(seed, with_labeled, dtype):
    x, lab = _data(seed)
    lab = lab if with_labeled else None
    args = dict(seed=seed, storage_dtype=dtype, block_rows=512, device="cpu")  # small blocks: exercise blocking
    picks, radii = kcenter_greedy(x, lab, 60, loop="device", **args)
    host_picks, host_radii = kcenter_greedy(x, lab, 60, loop="host", **args)
    ref_picks, ref_radii = _reference(x, lab, 60, seed, dtype)
    np.testing.assert_array_equal(picks, ref_picks)
    np.testing.assert_array_equal(picks, host_picks)
    np.testing.assert_allclose(radii, ref_radii, rtol=1e-12)
    np.testing.assert_allclose(radii, host_radii, rtol=1e-12)
    if not with_labeled:
        assert math.isinf(radii[0])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_exact_ties_and_duplicated_rows_go_to_the_lowest_index(dtype):
    # Small integers, every row present three times: distances are exact in every dtype, ties everywhere.
    rng = np.random.default_rng(1)
    base = rng.integers(0, 3, (200, 4)).astype(np.float32)
    x = np.concatenate([base, base, base])
    for lab in (None, x[:7]):
        picks, radii = kcenter_greedy(x, lab, 150, seed=5, loop="device", device="cpu", storage_dtype=dtype)
        np.testing.assert_array_equal(picks, brute_kcenter(x, lab, 150, 5)[0])
        np.testing.assert_array_equal(picks, kcenter_greedy(x, lab, 150, seed=5, loop="host", device="cpu",
                                                            storage_dtype=dtype)[0])
        assert len(set(picks.tolist())) == 150 and radii[-1] == 0.0


@pytest.mark.parametrize("labeled_knn", ["torch", "faiss"])
def test_near_ties_in_the_labeled_set_are_resolved_exactly(labeled_knn):
    # Labeled points nearly equidistant from candidates leave rows unverified after the start; each must
    # be checked against the whole labeled set when it reaches the top.  "faiss" here is a CPU index
    # standing in for the GPU one: the same code around it.
    x, lab = near_tie_points()
    state = DeviceMinDistances(x, lab, gamma=_gamma(16), device="cpu", labeled_knn=labeled_knn, block_rows=700)
    if labeled_knn == "faiss":
        assert not bool(state.verified[:3000].all()), "the float32 start should leave near-ties unverified"
    np.testing.assert_array_equal(loop_picks(state, 40), brute_kcenter(x, lab, 40)[0])


@pytest.mark.parametrize("labeled_knn", ["torch", "faiss"])
def test_minima_match_brute_force_after_updates(labeled_knn):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((800, 10)).astype(np.float32)
    lab = rng.standard_normal((25, 10)).astype(np.float32)
    state = DeviceMinDistances(x, lab, gamma=_gamma(10), device="cpu", labeled_knn=labeled_knn, block_rows=100)
    centers = [c for c in lab.astype(np.float64)]
    for _ in range(15):
        _, i = state.farthest()
        state.pick(i)
        centers.append(x[i].astype(np.float64))
    state.farthest()  # settles the last update
    m = state.min_d2[:800].numpy()
    ref = np.min(((x[:, None, :].astype(np.float64) - np.array(centers)[None]) ** 2).sum(-1), axis=1)
    picked = m == -np.inf
    verified = state.verified[:800].numpy()
    assert picked.sum() == 15
    # Verified rows hold the exact minimum; unverified ones an upper bound that is >= it.
    np.testing.assert_allclose(m[~picked & verified], ref[~picked & verified], rtol=1e-12)
    assert np.all(m[~picked] >= ref[~picked] * (1 - 1e-12))
    assert state.min_d2[800] == -math.inf and state.skip_below[800] == math.inf  # the sink row is untouched


def test_shard_protocol_host_centers_give_the_same_picks():
    # Ray shards send centers as host float64 rows (row/add_center); the result equals pick(i).
    x, lab = _data(2, n=1500)
    state = DeviceMinDistances(x, lab, gamma=_gamma(x.shape[1]), device="cpu")
    picks = []
    for _ in range(30):
        _, i = state.farthest()
        picks.append(i)
        center = state.row(i)
        assert center.dtype == np.float64
        state.remove(i)
        state.add_center(center)
    np.testing.assert_array_equal(picks, kcenter_greedy(x, lab, 30, device="cpu", loop="device")[0])


def test_two_updates_without_a_farthest_in_between():
    # The first update's row count is read before the second starts (its rows overflow the list).
    x, _ = _data(4, n=1000, labeled=0)
    state = DeviceMinDistances(x, None, gamma=_gamma(x.shape[1]), device="cpu")
    state.pick(10)
    state.pick(20)
    x64 = x.astype(np.float64)
    ref = np.minimum(((x64 - x64[10]) ** 2).sum(1), ((x64 - x64[20]) ** 2).sum(1))
    state.farthest()
    m = state.min_d2[:1000].numpy()
    keep = np.ones(1000, bool)
    keep[[10, 20]] = False
    np.testing.assert_allclose(m[keep], ref[keep], rtol=1e-12)


def test_device_loop_needs_no_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    x, lab = _data(3, n=600)
    np.testing.assert_array_equal(kcenter_greedy(x, lab, 20, device="cpu", loop="device")[0],
                                  brute_kcenter(x, lab, 20)[0])
    with pytest.raises(DalDistError, match="faiss is not installed"):
        DeviceMinDistances(x, lab, gamma=_gamma(x.shape[1]), device="cpu", labeled_knn="faiss")


def test_bfloat16_storage_and_loop_choice():
    x, lab = _data(6, n=1200, d=32, labeled=10)
    picks, _ = kcenter_greedy(x, lab, 40, storage_dtype="bfloat16", loop="device", device="cpu")
    np.testing.assert_array_equal(picks, _reference(x, lab, 40, 0, "bfloat16")[0])
    # On the CPU "auto" keeps today's NumPy loop; "device" is asked for explicitly.
    assert isinstance(min_distances(x, lab, device="cpu"), MinDistances)
    assert isinstance(min_distances(x, lab, device="cpu", loop="device"), DeviceMinDistances)
    with pytest.raises(DalDistError, match="loop 'gpu'"):
        kcenter_greedy(x, lab, 3, loop="gpu")
    with pytest.raises(DalDistError, match="labeled_knn"):
        DeviceMinDistances(x, lab, gamma=_gamma(32), device="cpu", labeled_knn="gpu")


# --- CUDA (skipped without a GPU) ----------------------------------------------------------------

@cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("with_labeled", [False, True])
def test_cuda_device_loop_equals_brute_force(with_labeled, dtype):
    x, lab = _data(7)
    lab = lab if with_labeled else None
    picks, radii = kcenter_greedy(x, lab, 60, seed=7, device="cuda", storage_dtype=dtype)  # auto -> device loop
    ref_picks, ref_radii = _reference(x, lab, 60, 7, dtype)
    np.testing.assert_array_equal(picks, ref_picks)
    np.testing.assert_allclose(radii, ref_radii, rtol=1e-12)


@cuda
def test_cuda_auto_chooses_the_device_loop_and_ties_go_low():
    x = np.concatenate([np.random.default_rng(1).integers(0, 3, (300, 4)).astype(np.float32)] * 2)
    assert isinstance(min_distances(x, None, device="cuda"), DeviceMinDistances)
    np.testing.assert_array_equal(kcenter_greedy(x, x[:5], 120, device="cuda")[0], brute_kcenter(x, x[:5], 120)[0])


@cuda
@pytest.mark.parametrize("labeled_knn", ["auto", "torch"])  # auto: FAISS on the GPU where the build has it
def test_cuda_near_ties_in_the_labeled_set(labeled_knn):
    x, lab = near_tie_points()
    state = DeviceMinDistances(x, lab, gamma=_gamma(16), device="cuda", labeled_knn=labeled_knn)
    np.testing.assert_array_equal(loop_picks(state, 40), brute_kcenter(x, lab, 40)[0])


@cuda
def test_cuda_pick_never_waits_for_the_host():
    # The update is enqueued only: CUDA's sync debug mode raises on any device->host synchronisation.
    x, lab = _data(8, n=20000, d=64)
    state = DeviceMinDistances(x, lab, gamma=_gamma(64), device="cuda")
    for _ in range(20):  # past the first picks, so the row list has the room it needs
        _, i = state.farthest()
        state.pick(i)
    _, i = state.farthest()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        state.pick(i)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    state.farthest()


@cuda
def test_cuda_gemv_error_stays_within_the_float32_bound_with_tf32_switched_on():
    # The skip test assumes fl(x.c) has float32 error; TF32 (2^-11) would break it.  Someone else in the
    # process may switch TF32 on: the GEMV must not use it.
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4096, 256)).astype(np.float32)
    c = rng.standard_normal(256).astype(np.float32)
    before = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        state = DeviceMinDistances(x, None, gamma=_gamma(256), device="cuda")
        got = state._gemv(torch.from_numpy(c).cuda(), state._dot).cpu().numpy().astype(np.float64)
    finally:
        torch.backends.cuda.matmul.fp32_precision = before
    exact = x.astype(np.float64) @ c.astype(np.float64)
    bound = _gamma(256) * np.linalg.norm(x.astype(np.float64), axis=1) * np.linalg.norm(c.astype(np.float64))
    assert np.all(np.abs(got - exact) <= bound)
