"""Filesystems and URIs: the dal_dist.fs helpers, and pools/scores/selection/driver given as `file://` URIs.

The non-local code path (no rename: temp key + copy, `_COMPLETE` marker) runs for real on a
`SubTreeFileSystem` registered under a test scheme: pyarrow treats it as a filesystem other than the
local one, exactly as it treats S3, while its bytes live under tmp_path.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError

SCHEME = "dalfs-test"


def _mnist(mnist_test_dir, n, offset=0):
    with gzip.open(mnist_test_dir / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[offset:offset + n]
    with gzip.open(mnist_test_dir / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[offset:offset + n].astype(np.int64)
    return x, y


@pytest.fixture
def subtree(tmp_path):
    """`dalfs-test://x` → tmp_path/store/x on a SubTreeFileSystem (a non-local pyarrow filesystem)."""
    (tmp_path / "store").mkdir()
    fsx.register_filesystem(SCHEME, pafs.SubTreeFileSystem(str(tmp_path / "store"), pafs.LocalFileSystem()))
    yield tmp_path / "store"
    fsx.register_filesystem(SCHEME, None)


@pytest.fixture(params=["path", "file-uri", "subtree"])
def root(request, tmp_path):
    """The same directory named three ways; yields (location, local directory holding its bytes)."""
    if request.param == "path":
        yield str(tmp_path / "d"), tmp_path / "d"
    elif request.param == "file-uri":
        yield (tmp_path / "d").as_uri(), tmp_path / "d"
    else:
        request.getfixturevalue("subtree")
        yield f"{SCHEME}://d", tmp_path / "store" / "d"


def test_helpers_read_write_list_move_on_every_kind_of_location(root):
    where, disk = root
    table = pa.table({"id": pa.array([3, 1, 2], pa.int64())})
    fsx.write_table_atomic(fsx.join(where, "b.parquet"), table)
    fsx.write_json_atomic(fsx.join(where, "a.json"), {"k": 1})
    fsx.write_bytes_atomic(fsx.join(where, "_meta"), b"x")
    fsx.write_bytes_atomic(fsx.join(where, "sub", "c.parquet"), b"not parquet")
    assert pq.read_table(disk / "b.parquet").equals(table)
    assert json.loads(fsx.read_bytes(fsx.join(where, "a.json"))) == {"k": 1}
    assert [fsx.basename(f) for f in fsx.list_files(where, ".parquet")] == ["b.parquet"]  # `_meta`, sub/ skipped
    assert [i.base_name for i in fsx.list_dir(where)] == ["_meta", "a.json", "b.parquet", "sub"]
    assert fsx.is_dir(where) and fsx.is_file(fsx.join(where, "a.json")) and not fsx.exists(fsx.join(where, "no"))
    assert fsx.size(fsx.join(where, "_meta")) == 1 and fsx.list_dir(fsx.join(where, "absent")) == []
    local = fsx.is_local(where)
    assert (local == disk) if not where.startswith(SCHEME) else local is None
    # A streamed write that fails publishes nothing and leaves no temp file behind.
    with pytest.raises(RuntimeError), fsx.atomic_output(fsx.join(where, "e.parquet")) as sink:
        with pq.ParquetWriter(sink, table.schema) as w:  # closed while unwinding: a complete-looking file
            w.write_table(table)
            raise RuntimeError("writer died")
    assert sorted(p.name for p in disk.iterdir()) == ["_meta", "a.json", "b.parquet", "sub"]
    with fsx.atomic_output(fsx.join(where, "e.parquet")) as sink:
        with pq.ParquetWriter(sink, table.schema) as w:
            w.write_table(table)
    assert pq.read_table(disk / "e.parquet").equals(table)
    # Publishing a directory: one rename locally; copy + `_COMPLETE` written last elsewhere.
    moved = fsx.join(fsx.parent(where), "moved")
    fsx.move_dir(where, moved)
    assert not disk.exists() and fsx.is_complete_dir(moved)
    assert (disk.parent / "moved" / "sub" / "c.parquet").read_bytes() == b"not parquet"
    assert (disk.parent / "moved" / fsx.COMPLETE_MARKER).exists() == (local is None)
    fsx.delete_dir(moved)
    assert not (disk.parent / "moved").exists() and not fsx.is_complete_dir(moved)


def test_paths_uris_and_bad_locations(tmp_path):
    assert fsx.resolve(tmp_path.as_uri())[1] == str(tmp_path)
    assert isinstance(fsx.resolve(str(tmp_path))[0], pafs.LocalFileSystem)
    assert fsx.join("s3://bucket/pool?region=eu-west-1", "part.parquet") == "s3://bucket/pool/part.parquet?region=eu-west-1"
    assert fsx.parent("gs://bucket/a/scores/") == "gs://bucket/a" and fsx.basename("s3://b/a/scores/") == "scores"
    assert fsx.parent("file:///a") == "file:///" and fsx.join("file:///", "a") == "file:///a"
    assert fsx.is_local("s3://bucket/run") is None and fsx.is_local(tmp_path.as_uri()) == tmp_path
    with pytest.raises(DalDistError, match=r"nosuch://bucket/pool: unsupported filesystem URI"):
        fsx.resolve("nosuch://bucket/pool")
    from dal_dist.pool import validate_pool

    with pytest.raises(DalDistError, match=r"nosuch://bucket/pool"):
        validate_pool("nosuch://bucket/pool")
    with pytest.raises(DalDistError, match=r"file://.*/absent: pool not found"):
        validate_pool((tmp_path / "absent").as_uri())
    from dal_dist.driver import run, run_status

    # Run directories need a lock and renames: refused on an object store before any network call.
    for call in (lambda: run(None, "s3://bucket/runs/a", resume=True), lambda: run_status("gs://bucket/runs/a")):
        with pytest.raises(DalDistError, match=r"(s3|gs)://bucket/runs/a: a run directory must be a local path "
                                               r"or file:// URI.*lock.*rename"):
            call()


def test_pool_ingest_and_info_by_file_uri_and_on_a_non_local_filesystem(tmp_path, subtree, mnist_test_dir):
    from dal_dist.cli.main import app
    from dal_dist.pool import iter_batches, pool_files, pool_info, write_pool

    x, y = _mnist(mnist_test_dir, 300)
    np.savez(tmp_path / "d.npz", x=x[..., 0], y=y)
    uri = (tmp_path / "pool").as_uri()
    runner = CliRunner()
    res = runner.invoke(app, ["pool", "ingest", "--format", "npz", "--file", str(tmp_path / "d.npz"), "--out", uri])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pool" / "part-00000.parquet").is_file()  # not a relative `file:` directory
    res = runner.invoke(app, ["pool", "info", uri, "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["rows"] == 300 and info["num_classes"] == 10 and info["path"] == uri
    assert info["label_counts"] == {str(k): int(v) for k, v in enumerate(np.bincount(y)) if v}
    # The same pool written to a filesystem without rename: part files land whole, no temp keys remain.
    write_pool(f"{SCHEME}://pool", x, y, chunk_rows=128)
    assert sorted(p.name for p in (subtree / "pool").iterdir()) == ["_dal_pool.json", "_rejects.parquet",
                                                                    "part-00000.parquet"]
    remote = pool_info(f"{SCHEME}://pool")
    assert {k: remote[k] for k in ("rows", "label_counts", "image_shape")} == \
        {k: info[k] for k in ("rows", "label_counts", "image_shape")}
    assert pool_files(f"{SCHEME}://pool") == [f"{SCHEME}://pool/part-00000.parquet"]
    ids = np.concatenate([b.column("id").to_numpy() for b in iter_batches(f"{SCHEME}://pool", columns=["id"])])
    assert ids.tolist() == list(range(300))
    with pytest.raises(DalDistError, match="already holds a pool"):
        write_pool(f"{SCHEME}://pool", x, y)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from dal_dist.models import build_model, default_config, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "mnist-cnn.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 10, seed=0)), path)
    return path


def test_score_and_select_through_file_uris(tmp_path, mnist_test_dir, ckpt):
    from dal_dist.cli.main import app
    from dal_dist.pool import write_pool
    from dal_dist.scoring import read_scores_table, score_pool
    from dal_dist.selection import select

    x, y = _mnist(mnist_test_dir, 240)
    write_pool(tmp_path / "pool", x, y, chunk_rows=100)
    labeled = np.arange(0, 240, 8)
    (tmp_path / "labeled.csv").write_text("id\n" + "\n".join(map(str, labeled)) + "\n")
    out = (tmp_path / "scores").as_uri()
    summary = score_pool((tmp_path / "pool").as_uri(), ckpt, out, acquisitions=["bald"], mc_samples=4,
                         workers=1, labeled=(tmp_path / "labeled.csv").as_uri(), batch_size=64, progress=False,
                         executor="local")  # file:// is a local path to Ray too; the Ray path runs in the next test
    table = read_scores_table(out)
    ids = table.column("id").to_numpy()
    expected = sorted(set(range(240)) - set(labeled.tolist()))
    assert sorted(ids.tolist()) == expected and summary.rows == len(expected) == len(ids)
    assert (tmp_path / "scores").is_dir() and not any(p.name.startswith(".scores") for p in tmp_path.iterdir())
    picks = select("topk", 5, scores=out, by="bald")
    bald = dict(zip(ids.tolist(), table.column("bald").to_numpy().tolist()))
    assert picks.column("id").to_pylist() == sorted(bald, key=lambda i: (-bald[i], i))[:5]
    res = CliRunner().invoke(app, ["select", "--strategy", "kcenter", "--k", "4", "--scores", out,
                                   "--out", (tmp_path / "sel.parquet").as_uri()])
    assert res.exit_code == 0, res.output
    sel = pq.read_table(tmp_path / "sel.parquet").column("id").to_pylist()
    assert len(set(sel)) == 4 and set(sel) <= set(expected)


def test_score_on_a_filesystem_without_rename_publishes_with_a_marker(tmp_path, subtree, ray_local,
                                                                    mnist_test_dir, ckpt):
    """Ray Data reads and writes through the (pickled) filesystem object; staging is copied, marker last."""
    from dal_dist.pool import write_pool
    from dal_dist.scoring import output_schema, read_scores_table, score_pool
    from dal_dist.selection.io import scan_scores

    x, y = _mnist(mnist_test_dir, 150)
    write_pool(f"{SCHEME}://pool", x, y, chunk_rows=64)
    part = pq.read_table(subtree / "pool" / "part-00000.parquet")
    bad = {"id": [999], "image": [b"\x89PNG\r\n\x1a\nnot a png"], "height": [None], "width": [None],
           "channels": [None], "label": [1]}
    pq.write_table(pa.table(bad, schema=part.schema), subtree / "pool" / "part-00001.parquet")  # one reject
    (subtree / "scores").mkdir()
    pq.write_table(output_schema(["entropy"], 4).empty_table(), subtree / "scores" / "stale.parquet")  # an old output
    summary = score_pool(f"{SCHEME}://pool", ckpt, f"{SCHEME}://scores", acquisitions=["entropy"], mc_samples=4,
                         workers=1, labeled=np.arange(10), batch_size=50, overwrite=True, progress=False)
    names = sorted(p.name for p in (subtree / "scores").iterdir())
    assert fsx.COMPLETE_MARKER in names and "rejects" in names and "stale.parquet" not in names
    assert pq.read_table(subtree / "scores" / "rejects").column("id").to_pylist() == [999] and summary.rejects == 1
    assert sorted(p.name for p in subtree.iterdir()) == ["pool", "scores"]  # staging removed
    ids = read_scores_table(f"{SCHEME}://scores").column("id").to_numpy()
    assert sorted(ids.tolist()) == list(range(10, 150)) and summary.rows == 140
    assert scan_scores(f"{SCHEME}://scores", score="entropy").num_candidates == 140
    (subtree / "scores" / fsx.COMPLETE_MARKER).unlink()  # as if publishing had been cut short
    with pytest.raises(DalDistError, match=r"dalfs-test://scores: scores directory is incomplete"):
        scan_scores(f"{SCHEME}://scores", score="entropy")


def test_driver_run_with_pools_given_as_file_uris(tmp_path, mnist_test_dir):
    """Pool, test pool and run dir as file:// URIs; `executor: local` keeps it cheap (Ray Data's
    filesystem handling is covered by the scoring tests above)."""
    from dal_dist.driver.config import parse_config
    from dal_dist.driver.ledger import LabelLedger
    from dal_dist.driver import run
    from dal_dist.pool import write_pool

    x, y = _mnist(mnist_test_dir, 300)
    write_pool(tmp_path / "pool", x[:200], y[:200])
    write_pool(tmp_path / "test", x[200:], y[200:], ids=np.arange(200, 300))
    cfg = parse_config({"pool": (tmp_path / "pool").as_uri(), "test_pool": (tmp_path / "test").as_uri(),
                        "strategy": {"name": "random"}, "initial": {"kind": "balanced", "size": 10}, "budget": 5,
                        "rounds": 1, "train": {"epochs": 1, "batch_size": 16, "workers": 1},
                        "final_train": False, "workers": 1, "seed": 0, "executor": "local"})
    outcome = run(cfg, (tmp_path / "run").as_uri())
    assert outcome.status == "done"
    ledger = LabelLedger(tmp_path / "run").table()
    ids = ledger.column("id").to_numpy()
    assert len(ids) == 15 and len(set(ids.tolist())) == 15 and ids.max() < 200
    np.testing.assert_array_equal(ledger.column("label").to_numpy(), y[ids])  # the oracle read the URI pool
    metrics = json.loads((tmp_path / "run" / "rounds" / "001" / "metrics.json").read_text())
    assert metrics["test_images"] == 100 and 0.0 <= metrics["test_accuracy"] <= 1.0
