"""k-center greedy: exact picks against a float64 brute force, radius trace, ties, storage dtypes."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection.kcenter import MinDistances, as_storage, kcenter_greedy, to_float
from selection_helpers import brute_kcenter, near_tie_points


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("with_labeled", [False, True])
def test_picks_equal_float64_brute_force(seed, with_labeled):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2000, 24)).astype(np.float32) * rng.uniform(0.1, 10)
    lab = rng.standard_normal((37, 24)).astype(np.float32) if with_labeled else None
    picks, radii = kcenter_greedy(x, lab, 60, seed=seed, block_rows=512)  # small blocks: exercise blocking
    ref_picks, ref_radii = brute_kcenter(x, lab, 60, seed)
    np.testing.assert_array_equal(picks, ref_picks)
    np.testing.assert_allclose(radii, ref_radii, rtol=1e-12)
    assert np.all(np.diff(radii) <= 0), "covering radius must be non-increasing"
    assert len(set(picks.tolist())) == len(picks)
    if not with_labeled:
        assert picks[0] == np.random.default_rng(seed).integers(len(x)) and math.isinf(radii[0])


def test_ties_break_to_lowest_index_and_duplicates():
    # Small integers: distances are exact in float32 and float64, so there are many exact ties.
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, (600, 4)).astype(np.float32)
    for lab in (None, x[:7]):
        picks, radii = kcenter_greedy(x, lab, 120, seed=5)
        ref_picks, _ = brute_kcenter(x, lab, 120, 5)
        np.testing.assert_array_equal(picks, ref_picks)
        assert len(set(picks.tolist())) == 120  # duplicates of centers (radius 0) are still distinct rows
        assert radii[-1] == 0.0


def test_near_ties_in_labeled_set_are_resolved_exactly():
    # Labeled points nearly equidistant from candidates make FAISS's float32 nearest unreliable; the
    # lazy float64 verification must still give the brute-force answer.
    x, lab = near_tie_points()
    picks, _ = kcenter_greedy(x, lab, 40)
    np.testing.assert_array_equal(picks, brute_kcenter(x, lab, 40)[0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_storage_is_exact_for_the_rounded_vectors(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1500, 32)).astype(np.float32)
    lab = rng.standard_normal((10, 32)).astype(np.float32)
    picks, _ = kcenter_greedy(x, lab, 50, storage_dtype=dtype)
    rounded = to_float(as_storage(x, dtype), np.float64)
    rounded_lab = to_float(as_storage(lab, dtype), np.float64)
    np.testing.assert_array_equal(picks, brute_kcenter(rounded, rounded_lab, 50)[0])


def test_min_distances_match_brute_force_after_updates():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((800, 10)).astype(np.float32)
    lab = rng.standard_normal((25, 10)).astype(np.float32)
    state = MinDistances(x, lab, device="cpu", block_rows=100)
    for _ in range(15):
        d2, i = state.farthest()
        state.remove(i)
        state.add_center(state.row(i))
    ref = np.min(((x[:, None, :].astype(np.float64) - lab[None].astype(np.float64)) ** 2).sum(-1), axis=1)
    picked = state.min_d2 == -np.inf
    # Verified rows hold the exact minimum; unverified ones an upper bound that is >= it.
    assert np.all(state.min_d2[~picked] <= ref[~picked] + 1e-9)
    assert picked.sum() == 15


def test_labeled_start_without_faiss_names_the_extra_to_install(monkeypatch):
    # faiss comes from the cpu or gpu extra (never both); without either the host loop says which to add.
    monkeypatch.setitem(sys.modules, "faiss", None)
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    with pytest.raises(DalDistError, match=r"dal-dist\[cpu\]"):
        kcenter_greedy(x, x[:3], 5, device="cpu", loop="host")


@pytest.mark.parametrize("bad, match", [
    (dict(k=0), "positive"),
    (dict(k=-3), "positive"),
    (dict(k=11), "larger than the number of candidates"),
    (dict(x=np.full((10, 4), np.nan, np.float32)), "row 0 has NaN"),
    (dict(lab=np.array([[np.inf, 0, 0, 0]], np.float32)), "labeled embeddings: row 0"),
    (dict(lab=np.zeros((2, 5), np.float32)), r"expected \(L, 4\)"),
    (dict(x=np.zeros((0, 4), np.float32), k=1), "empty pool"),
])
def test_bad_input_is_rejected_before_work(bad, match):
    args = dict(x=np.zeros((10, 4), np.float32), lab=None, k=3)
    args.update(bad)
    with pytest.raises(DalDistError, match=match):
        kcenter_greedy(args["x"], args["lab"], args["k"])
