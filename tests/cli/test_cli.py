"""The CLI end to end on real MNIST: ingest → model init → score (2 workers) → select; errors exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
from typer.testing import CliRunner

from dal_dist.cli.main import app
runner = CliRunner()


def _ok(args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_ingest_init_score_select(tmp_path, ray_local, mnist_test_dir):
    images = mnist_test_dir / "t10k-images-idx3-ubyte.gz"
    labels = mnist_test_dir / "t10k-labels-idx1-ubyte.gz"
    _ok(["pool", "ingest", "--format", "mnist-idx", "--images", images, "--labels", labels,
         "--out", tmp_path / "full"])
    # A 700-image pool in three files keeps the scoring run short but still sharded.
    t = pq.read_table(sorted((tmp_path / "full").glob("part-*.parquet"))[0]).slice(0, 700)
    (tmp_path / "pool").mkdir()
    for k in range(3):
        pq.write_table(t.slice(k * 240, 240), tmp_path / "pool" / f"part-{k}.parquet")
    info = json.loads(_ok(["pool", "info", tmp_path / "pool", "--json"]))
    assert info["rows"] == 700
    _ok(["model", "init", "--model", "mnist-cnn", "--classes", "10", "--out", tmp_path / "m.pt"])
    (tmp_path / "labeled.csv").write_text("id\n" + "\n".join(str(i) for i in range(0, 700, 70)) + "\n")
    out = _ok(["score", "--pool", tmp_path / "pool", "--checkpoint", tmp_path / "m.pt", "--workers", "2",
               "--mc-samples", "5", "--labeled", tmp_path / "labeled.csv", "--embed-labeled",
               "--out", tmp_path / "scores"])
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rows"] == 700 and summary["labeled_rows"] == 10 and summary["rejects"] == 0
    _ok(["select", "--scores", tmp_path / "scores", "--strategy", "kcenter", "--k", "25",
         "--out", tmp_path / "kc.parquet"])
    kc = pq.read_table(tmp_path / "kc.parquet")
    ids = kc.column("id").to_numpy()
    assert len(ids) == len(set(ids.tolist())) == 25
    assert not set(ids.tolist()) & set(range(0, 700, 70))  # labeled rows are centers, never picked
    assert (np.diff(kc.column("radius").to_numpy()) <= 1e-9).all()
    _ok(["select", "--scores", tmp_path / "scores", "--strategy", "topk", "--by", "bald", "--k", "25",
         "--out", tmp_path / "top.parquet"])
    top = pq.read_table(tmp_path / "top.parquet").column("id").to_numpy()
    scores = pq.read_table(tmp_path / "scores").to_pandas()
    unl = scores[~scores["labeled"]].sort_values(["bald", "id"], ascending=[False, True])
    assert set(top.tolist()) == set(unl["id"].head(25).tolist())


def test_errors_name_the_problem_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dal_dist", "pool", "info", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "nope" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dal_dist", "model", "init", "--model", "vgg", "--classes", "10",
                        "--out", str(tmp_path / "m.pt")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown name 'vgg'" in r.stderr


def test_embed_writes_every_row_once_and_refuses_a_second_time(tmp_path, mnist_test_dir):
    from dal_dist.pool import ingest_mnist_idx

    ingest_mnist_idx(mnist_test_dir / "t10k-images-idx3-ubyte.gz", mnist_test_dir / "t10k-labels-idx1-ubyte.gz",
                     tmp_path / "full")
    t = pq.read_table(sorted((tmp_path / "full").glob("part-*.parquet"))[0]).slice(0, 50)
    (tmp_path / "pool").mkdir()
    pq.write_table(t, tmp_path / "pool" / "part-0.parquet")
    out = _ok(["embed", "--pool", tmp_path / "pool", "--model", "mnist-cnn", "--out", tmp_path / "emb",
               "--executor", "local", "--embedding-dtype", "float32"])
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["rows"], summary["rejects"]) == (50, 0)
    t = pq.read_table(tmp_path / "emb").sort_by("id")
    assert t.column("id").to_pylist() == list(range(50)) and t.schema.field("embedding").type.list_size == 3872
    from dal_dist.errors import DalDistError

    again = runner.invoke(app, ["embed", "--pool", str(tmp_path / "pool"), "--model", "mnist-cnn", "--out",
                                str(tmp_path / "emb"), "--executor", "local"])
    assert isinstance(again.exception, DalDistError) and "output directory exists" in str(again.exception)
    both = runner.invoke(app, ["embed", "--pool", str(tmp_path / "pool"), "--out", str(tmp_path / "e2")])
    assert isinstance(both.exception, DalDistError) and "exactly one of --model" in str(both.exception)
