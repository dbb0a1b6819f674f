"""Random selection is the seeded numpy draw the driver's random rounds make, on the unlabeled rows only."""

from __future__ import annotations

import numpy as np
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import random_ids, select, select_random


@pytest.mark.parametrize("n,k,seed", [(10, 3, 0), (1000, 999, 5), (50_000, 20, 1), (7, 7, 2)])
def test_random_ids_is_exactly_the_numpy_draw(n, k, seed):
    ids = np.random.default_rng(99).permutation(3 * n)[:n].astype(np.int64)
    want = np.random.default_rng(seed).choice(ids, size=k, replace=False)
    np.testing.assert_array_equal(random_ids(ids, k, seed), want)


def test_random_ids_bad_k():
    with pytest.raises(DalDistError, match="larger than the number of candidates"):
        random_ids(np.arange(5), 6, 0)
    with pytest.raises(DalDistError, match="positive"):
        random_ids(np.arange(5), 0, 0)


def test_select_random_draws_from_the_unlabeled_rows_in_dataset_order(scores_dir):
    path, ids, _, labeled, _ = scores_dir
    want = np.random.default_rng(3).choice(ids[~labeled], size=30, replace=False)
    np.testing.assert_array_equal(select_random(path, 30, seed=3), want)
    np.testing.assert_array_equal(select("random", 30, scores=path, seed=3).column("id").to_numpy(), want)
