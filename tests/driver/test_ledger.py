"""Label ledger: append-only, one atomic file per round, idempotent per round, readable by pyarrow.dataset."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as ds
import pytest

from dal_dist.errors import DalDistError
from dal_dist.driver.ledger import LabelLedger


def test_append_read_and_dataset_view(tmp_path):
    led = LabelLedger(tmp_path)
    assert led.count() == 0 and len(led.ids()) == 0
    assert led.append(0, np.array([5, 3, 9]), np.array([1, 0, 2]), "simulated")
    assert led.append(1, np.array([7]), np.array([4]), "human")
    assert led.count() == 4 and led.ids().tolist() == [5, 3, 9, 7]
    assert led.ids(before_round=1).tolist() == [5, 3, 9]
    table = ds.dataset(led.dir, format="parquet").to_table()
    assert sorted(table.column_names) == ["id", "label", "round", "source"]
    assert sorted(table.column("id").to_pylist()) == [3, 5, 7, 9]
    assert (tmp_path / "labels" / "round-0001.parquet").is_file()


def test_same_round_same_content_is_a_no_op_and_different_content_is_refused(tmp_path):
    led = LabelLedger(tmp_path)
    led.append(2, np.array([1, 2]), np.array([0, 1]), "simulated")
    assert led.append(2, np.array([1, 2]), np.array([0, 1]), "simulated") is False  # a resumed driver
    with pytest.raises(DalDistError, match="already in the ledger with different labels"):
        led.append(2, np.array([1, 2]), np.array([1, 1]), "simulated")
    assert led.count() == 2


@pytest.mark.parametrize("ids, labels, match", [
    ([1, 8], [0, 0], r"already labeled in an earlier round, e.g. \[1\]"),
    ([8, 8], [0, 1], "duplicate ids"),
    ([8], [-1], "negative label"),
    ([8, 9], [0], "2 ids but 1 labels"),
])
def test_refused_appends_write_nothing(tmp_path, ids, labels, match):
    led = LabelLedger(tmp_path)
    led.append(0, np.array([1, 2]), np.array([0, 1]), "simulated")
    before = sorted(p.name for p in led.dir.iterdir())
    with pytest.raises(DalDistError, match=match):
        led.append(1, np.array(ids), np.array(labels), "human")
    assert sorted(p.name for p in led.dir.iterdir()) == before and led.count() == 2


def test_failed_write_leaves_the_ledger_intact(tmp_path, monkeypatch):
    led = LabelLedger(tmp_path)
    led.append(0, np.array([1, 2]), np.array([0, 1]), "simulated")

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pyarrow.parquet.write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        led.append(1, np.array([3]), np.array([2]), "simulated")
    monkeypatch.undo()
    assert sorted(p.name for p in led.dir.iterdir()) == ["round-0000.parquet"]  # no temp file left behind
    assert led.count() == 2 and led.ids().tolist() == [1, 2]
