"""Seeded uniform random selection: the baseline every strategy is compared against."""

from __future__ import annotations

import numpy as np


def random_selection(candidate_ids: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k distinct ids drawn uniformly with `np.random.default_rng(seed)` (same seed, same ids)."""
    rng = np.random.default_rng(seed)
    return np.asarray(candidate_ids)[rng.choice(len(candidate_ids), size=k, replace=False)]
