"""Selection fixtures: a tiny scores dataset with labeled rows and tied scores."""

from __future__ import annotations

import numpy as np
import pytest

from selection_helpers import write_scores


@pytest.fixture
def scores_dir(tmp_path):
    """400 rows, d=8, 3 files, ids shuffled, 20 rows marked labeled, a `bald` score with ties."""
    rng = np.random.default_rng(7)
    n = 400
    ids = rng.permutation(10_000)[:n].astype(np.int64)
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    labeled = np.zeros(n, bool)
    labeled[rng.choice(n, 20, replace=False)] = True
    bald = np.round(rng.random(n), 2).astype(np.float32)  # rounded: many ties
    path = write_scores(tmp_path / "scores", ids, emb, files=3, labeled=labeled, scores={"bald": bald})
    return path, ids, emb, labeled, bald
