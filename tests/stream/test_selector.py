"""The stream selector on real MNIST: every item decided once, restarts, bad files, the CLI end to end."""

from __future__ import annotations

import io
import json
import math
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.stream import DECISIONS_DIR, STATE_FILE, StreamSelector, parquet_footer_complete


@pytest.fixture(scope="module")
def mnist(tmp_path_factory, mnist_test_dir):
    """The first 600 real MNIST test images (read straight from the IDX head) and an untrained mnist-cnn."""
    import gzip

    from dal_dist.models import build_model, default_config, save_checkpoint

    n = 600
    with gzip.open(mnist_test_dir / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(16 + n * 784)[16:], np.uint8).reshape(n, 28, 28, 1)
    with gzip.open(mnist_test_dir / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(8 + n)[8:], np.uint8).astype(np.int64)
    ckpt = tmp_path_factory.mktemp("stream") / "m.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 10)), ckpt)
    return x, y, ckpt


def _file_bytes(x, y, ids) -> bytes:
    from dal_dist.pool import pool_schema, raw_image_batch

    schema = pool_schema(has_label=True)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_batches([raw_image_batch(ids, x[ids], y[ids], schema)]), buf)
    return buf.getvalue()


def _selector(out, ckpt, **kw):
    kw = {"budget": 20, "expected": 240, "mc_samples": 2, "threads": 1, "batch_size": 64, **kw}
    return StreamSelector(out, ckpt, **kw)


def _decisions(out):
    return pq.read_table(out / DECISIONS_DIR).sort_by("arrival").to_pydict()


def test_growing_directory_every_item_exactly_once(tmp_path, mnist):
    x, y, ckpt = mnist
    src = tmp_path / "src"
    src.mkdir()
    (src / "_dal_pool.json").write_text("{}")  # metadata files are ignored, as in a pool
    files = [(f"part-{k:05d}.parquet", _file_bytes(x, y, np.arange(k * 60, (k + 1) * 60))) for k in range(5)]
    done = threading.Event()

    def writer():
        # Each file lands in two writes, so the selector sees it without its footer first.
        for name, data in files:
            with open(src / name, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(0.15)
                f.write(data[len(data) // 2:])
            time.sleep(0.05)
        done.set()  # the selector takes every complete file still unprocessed, then returns

    th = threading.Thread(target=writer)
    th.start()
    try:
        summary = _selector(tmp_path / "out", ckpt, expected=300).run_directory(src, poll_seconds=0.02, stop=done)
    finally:
        th.join()
    d = _decisions(tmp_path / "out")
    assert d["id"] == list(range(300)) and d["arrival"] == list(range(300))  # once each, in name order
    assert summary.seen == 300 and summary.labeled == sum(v == "label" for v in d["decision"]) <= 20
    assert summary.rejected_files == [] and summary.batches == 5
    sel = pq.read_table(tmp_path / "out" / "selected").column("id").to_pylist()
    assert sorted(sel) == [i for i, v in zip(d["id"], d["decision"]) if v == "label"]
    state = json.loads((tmp_path / "out" / STATE_FILE).read_text())
    assert state["processed"] == [f"part-{k:05d}" for k in range(5)]


def test_restart_does_not_redecide_and_matches_an_uninterrupted_run(tmp_path, mnist):
    x, y, ckpt = mnist
    data = [_file_bytes(x, y, np.arange(k * 60, (k + 1) * 60)) for k in range(4)]
    full = tmp_path / "full"
    full.mkdir()
    for k, b in enumerate(data):
        (full / f"part-{k}.parquet").write_bytes(b)
    _selector(tmp_path / "a", ckpt).run_directory(full, poll_seconds=0.01, idle_timeout=0)

    grow = tmp_path / "grow"
    grow.mkdir()
    for k in range(2):
        (grow / f"part-{k}.parquet").write_bytes(data[k])
    first = _selector(tmp_path / "b", ckpt).run_directory(grow, poll_seconds=0.01, idle_timeout=0)
    assert first.seen == 120 and first.stopped == "idle_timeout"
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "b" / DECISIONS_DIR).iterdir()}
    for k in range(2, 4):
        (grow / f"part-{k}.parquet").write_bytes(data[k])
    second = _selector(tmp_path / "b", ckpt).run_directory(grow, poll_seconds=0.01, idle_timeout=0)
    assert second.seen == 240 and second.batches == 4
    for name, m in mtimes.items():  # the first two files were not re-decided
        assert (tmp_path / "b" / DECISIONS_DIR / name).stat().st_mtime_ns == m
    assert _decisions(tmp_path / "b") == _decisions(tmp_path / "a")

    # An iterator that dies mid-stream: the rerun skips committed batches and ends as one clean run.
    def batches(fail_at=None):
        for i in range(4):
            if i == fail_at:
                raise RuntimeError("source died")
            yield np.arange(i * 40, (i + 1) * 40), x[i * 40:(i + 1) * 40], y[i * 40:(i + 1) * 40]

    _selector(tmp_path / "c", ckpt, expected=160).run_iterator(batches())
    with pytest.raises(RuntimeError):
        _selector(tmp_path / "d", ckpt, expected=160).run_iterator(batches(fail_at=3))
    _selector(tmp_path / "d", ckpt, expected=160).run_iterator(batches())
    assert _decisions(tmp_path / "d") == _decisions(tmp_path / "c")
    with pytest.raises(DalDistError, match="budget: 20 in the state vs 21 now"):
        _selector(tmp_path / "d", ckpt, expected=160, budget=21).run_iterator(batches())


def test_truncated_and_corrupt_files_are_rejected_by_name(tmp_path, mnist):
    x, y, ckpt = mnist
    good = _file_bytes(x, y, np.arange(50))
    assert parquet_footer_complete_bytes(tmp_path, good) and not parquet_footer_complete_bytes(tmp_path, good[:-3])
    src = tmp_path / "src"
    src.mkdir()
    (src / "part-0.parquet").write_bytes(good)
    (src / "part-1.parquet").write_bytes(b"PAR1" + b"\x07" * 500 + (100).to_bytes(4, "little") + b"PAR1")
    (src / "part-2.parquet").write_bytes(_file_bytes(x, y, np.arange(50, 100))[:2000])  # never finished
    s = _selector(tmp_path / "out", ckpt).run_directory(src, poll_seconds=0.01, idle_timeout=0.1)
    assert s.seen == 50
    reasons = {r["file"]: r["reason"] for r in s.rejected_files}
    assert set(reasons) == {"part-1.parquet", "part-2.parquet"}
    assert "corrupt" in reasons["part-1.parquet"] and "truncated" in reasons["part-2.parquet"]
    # A rerun does not retry them; with --bad-files error the stream stops on the first, naming it.
    assert _selector(tmp_path / "out", ckpt).run_directory(src, poll_seconds=0.01, idle_timeout=0).seen == 50
    with pytest.raises(DalDistError, match="part-1.parquet.*not a readable Parquet file"):
        _selector(tmp_path / "strict", ckpt, bad_files="error").run_directory(src, poll_seconds=0.01,
                                                                               idle_timeout=0)


def parquet_footer_complete_bytes(tmp_path, data: bytes) -> bool:
    p = tmp_path / "probe.bin"
    p.write_bytes(data)
    return parquet_footer_complete(p)


def test_cli_stream_end_to_end_with_simulated_oracle(tmp_path, mnist):
    from typer.testing import CliRunner

    from dal_dist.cli.main import app
    from dal_dist.pool import write_pool
    x, y, _ = mnist
    write_pool(tmp_path / "pool", x[:200], y[:200], ids=np.arange(5000, 5200), meta={"num_classes": 10})
    runner = CliRunner()
    r = runner.invoke(app, ["model", "init", "--model", "mnist-cnn", "--classes", "10", "--out",
                            str(tmp_path / "m.pt")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    args = ["stream", "--source", str(tmp_path / "pool"), "--checkpoint", str(tmp_path / "m.pt"),
            "--acquisition", "bald", "--budget", "20", "--expected", "200", "--mc-samples", "2",
            "--poll-seconds", "0.05", "--idle-timeout", "0.2", "--oracle", "simulated", "--threads", "1",
            "--out", str(tmp_path / "out")]
    r = runner.invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["seen"] == 200 and summary["labeled"] == 20 == summary["labels_written"]
    assert summary["budget_used"] == 1.0 and summary["stopped"] == "budget_spent"
    assert math.isfinite(summary["final_threshold"]) and summary["threshold_trace"][-1]["labeled"] == 20
    labels = pq.read_table(tmp_path / "out" / "labels").to_pydict()
    assert labels["label"] == [int(y[i - 5000]) for i in labels["id"]]  # the pool's hidden labels
    r = runner.invoke(app, args[:-1] + [str(tmp_path / "other"), "--rate", "0.1"])
    assert isinstance(r.exception, DalDistError) and "exactly one of --expected" in str(r.exception)


def test_a_second_stream_on_the_same_output_is_refused(tmp_path, mnist):
    from dal_dist.locks import DirectoryLock

    x, _, ckpt = mnist
    with DirectoryLock(tmp_path / "out", "stream output", "held by this test"):
        with pytest.raises(DalDistError, match=r"stream output .*out is locked by pid \d+ "
                                               r"\(another stream is writing this output directory\)"):
            _selector(tmp_path / "out", ckpt, expected=40).run_iterator([(np.arange(40), x[:40])])
    assert not (tmp_path / "out" / DECISIONS_DIR).exists()
