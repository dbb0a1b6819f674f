"""TypiClust (Hacohen et al. 2022): the picks follow the reference procedure on the same clustering."""

from __future__ import annotations

import numpy as np
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import select, typiclust
from dal_dist.selection.kmeans import kmeans
from selection_helpers import write_scores


def _blobs(seed=0, per=30, centers=6, d=4):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d)) * 20
    x = np.concatenate([c[i] + rng.standard_normal((per + 3 * i, d)) for i in range(centers)]).astype(np.float32)
    return x


def _reference(x, labeled, k, assign):
    """The reference code's loop (avihu111/TypiClust), brute-force distances, pandas sort replaced by lexsort."""
    ids, sizes = np.unique(assign, return_counts=True)
    existing = np.array([(labeled & (assign == c)).sum() for c in ids])
    keep = sizes > 5
    ids, sizes, existing = ids[keep], sizes[keep], existing[keep]
    order = ids[np.lexsort((ids, -sizes, existing))]
    lab = assign.copy()
    lab[labeled] = -1
    picks = []
    for i in range(k):
        rows = np.flatnonzero(lab == order[i % len(order)])
        f = x[rows].astype(np.float64)
        d2 = ((f[:, None] - f[None]) ** 2).sum(-1)
        nn = min(20, len(rows) // 2)
        mean = np.sort(d2, axis=1)[:, 1:nn + 1].mean(1)
        j = rows[int(np.argmax(1 / (mean + 1e-5)))]
        picks.append(j)
        lab[j] = -1
    return np.array(picks)


def test_picks_match_the_reference_procedure():
    x = _blobs()
    labeled = np.zeros(len(x), bool)
    labeled[[0, 1, 40]] = True  # blobs 0 and 1 are covered: visited last
    k = 8
    got, typ = typiclust(x, labeled, k, seed=2)
    assign = kmeans(x, min(3 + k, 500), seed=2)[0]
    np.testing.assert_array_equal(got, _reference(x, labeled, k, assign))
    assert not labeled[got].any() and len(set(got.tolist())) == k and (typ > 0).all()


def test_over_scores_dataset_seeded_with_labeled_file(tmp_path):
    x = _blobs(1)
    n = len(x)
    ids = np.random.default_rng(3).permutation(5000)[:n].astype(np.int64)
    path = write_scores(tmp_path / "s", ids, x, files=3)
    lab = tmp_path / "lab.csv"
    lab.write_text("id\n" + "\n".join(map(str, ids[:4])) + "\n")
    a = select("typiclust", 7, scores=path, labeled=lab, seed=1).column("id").to_numpy()
    b = select("typiclust", 7, scores=path, labeled=lab, seed=1).column("id").to_numpy()
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 7 and not set(a.tolist()) & set(ids[:4].tolist())
    assert select("typiclust", 5, scores=path, clusters=3).column_names == ["id", "typicality"]


def test_more_picks_than_clusters_cycles_and_small_data():
    x = _blobs(2, per=6, centers=2)
    got, _ = typiclust(x, np.zeros(len(x), bool), 12, max_clusters=2)
    assert len(set(got.tolist())) == 12


def test_bad_input_refused(tmp_path):
    x = _blobs()
    with pytest.raises(DalDistError, match="k = 500 is larger"):
        typiclust(x, np.zeros(len(x), bool), 500)
    x[5, 1] = np.nan
    with pytest.raises(DalDistError, match="row 5 has NaN"):
        typiclust(x, np.zeros(len(x), bool), 3)
    path = write_scores(tmp_path / "s", np.arange(30), np.ones((30, 2), np.float32))
    with pytest.raises(DalDistError, match=r"clusters \(--clusters\) = 0"):
        select("typiclust", 3, scores=path, clusters=0)
    with pytest.raises(DalDistError, match=r"clusters \(--clusters\) is only used by"):
        select("kcenter", 3, scores=path, clusters=4)
