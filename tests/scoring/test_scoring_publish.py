"""Publishing scores: the `_dal_scores.json` marker, and what --overwrite recognises as a scores output."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.scoring import REJECTS_DIR, SCORES_MARKER, read_scores_table, score_pool
from dal_dist.scoring.publish import check_replaceable, foreign_entries


@pytest.fixture
def published(tmp_path, small_pool, ckpt):
    """A scores output of the small pool (local executor), with one reject file added as scoring writes them."""
    out = tmp_path / "scores"
    score_pool(small_pool, ckpt, out, acquisitions="bald,entropy", mc_samples=2, labeled=np.array([0, 1, 2]),
               executor="local", progress=False)
    return out


def test_a_published_output_carries_a_marker_listing_it(published):
    marker = json.loads((published / SCORES_MARKER).read_text())
    assert marker["format"] == "dal-dist-scores/1" and marker["acquisitions"] == ["bald", "entropy"]
    assert marker["rows"] == 117 and marker["rejects"] == 0 and marker["mc_samples"] == 2
    assert sorted(marker["files"]) == sorted(p.name for p in published.glob("*.parquet"))
    assert read_scores_table(published).num_rows == 117  # readers skip the marker
    assert foreign_entries(published) == []


def test_outputs_from_before_the_marker_are_recognised_by_their_structure(published):
    (published / SCORES_MARKER).unlink()
    (published / REJECTS_DIR).mkdir()
    pq.write_table(pa.table({"id": pa.array([7], pa.int64()), "reason": ["image: null"]}),
                   published / REJECTS_DIR / "part-7-abc.parquet")
    (published / "_COMPLETE").write_bytes(b"")  # as published off local disk
    assert foreign_entries(published) == []
    check_replaceable(published, overwrite=True)
    # Anything else is named: a stray file, a Parquet file of another schema, a folder, a bad reject file.
    pq.write_table(pa.table({"id": pa.array([1], pa.int64()), "image": [b"x"]}), published / "pool-part.parquet")
    (published / "notes").mkdir()
    (published / REJECTS_DIR / "README").write_text("x")
    (published / "stale.parquet").write_bytes(b"old output")
    assert foreign_entries(published) == ["notes/", "pool-part.parquet", "rejects/README", "stale.parquet"]
    with pytest.raises(DalDistError, match=r"scores: holds 4 entries that are not a dal-dist scores output: "
                                           r"notes/, pool-part.parquet, rejects/README, stale.parquet; --overwrite"):
        check_replaceable(published, overwrite=True)
    with pytest.raises(DalDistError, match="exists and is not empty"):
        check_replaceable(published, overwrite=False)


def test_a_marker_does_not_vouch_for_files_it_does_not_list(published):
    (published / "NOTES.txt").write_text("mine")
    assert foreign_entries(published) == ["NOTES.txt"]
    (published / "NOTES.txt").unlink()
    (published / SCORES_MARKER).write_text("{not json")  # a damaged marker is not a marker
    assert foreign_entries(published) == [SCORES_MARKER]

