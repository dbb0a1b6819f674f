"""Stream-based selective sampling: the budget calibrator's guarantees, then the selector on real MNIST."""

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
from dal_dist.stream import (DECISIONS_DIR, STATE_FILE, BudgetCalibrator, StreamSelector,
                             parquet_footer_complete)


# ------------------------------------------------------------------------------------ calibrator
def _sequences(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "increasing": np.arange(n, dtype=float), "decreasing": -np.arange(n, dtype=float),
        "constant": np.ones(n), "random": rng.random(n), "heavy_tail": rng.pareto(1.0, n),
        "sawtooth": np.tile(np.arange(37, dtype=float), n // 37 + 1)[:n],
        "with_nan": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
    }


@pytest.mark.parametrize("budget,expected", [(50, 1000), (1, 300), (0, 100), (120, 100), (300, 1000)])
@pytest.mark.parametrize("name", list(_sequences(8)))
def test_calibrator_never_exceeds_budget_and_keeps_the_schedule(name, budget, expected):
    scores = _sequences(2 * expected)[name]  # the stream runs past N: the cap must still hold
    c = BudgetCalibrator(budget, expected)
    lab, thr, reasons = c.decide_many(scores)
    cum = np.cumsum(lab)
    assert cum[-1] <= budget
    assert cum[expected - 1] == min(budget, expected)  # exactly N items → the whole budget
    t = np.arange(1, expected + 1)
    before_spent = cum[:expected] < budget
    sched = budget * t / expected
    assert (cum[:expected][before_spent] <= np.ceil(sched[before_spent]) + c.slack).all()
    assert (cum[:expected] >= np.minimum(np.floor(sched) - c.slack - 1, np.minimum(t, budget))).all()
    assert np.isnan(thr[[r == "warmup" for r in reasons]]).all()


def test_calibrator_rate_tracks_budget_on_iid_scores_and_picks_high_ones():
    n, b = 5000, 250
    scores = np.random.default_rng(1).random(n)
    lab, _, reasons = BudgetCalibrator(b, n).decide_many(scores)
    assert lab.sum() == b
    quarters = [int(q.sum()) for q in np.array_split(lab, 4)]
    assert all(abs(q - b / 4) <= 0.2 * b / 4 for q in quarters), quarters
    # The window quantile does the choosing: most labels are in the top B/N of all scores.
    assert (scores[lab] >= np.quantile(scores, 1 - b / n)).mean() >= 0.7
    assert reasons.count("quantile") > 0.9 * n


@pytest.mark.parametrize("direction", [1, -1])
def test_calibrator_spends_evenly_on_a_drifting_stream(direction):
    n, b = 4000, 200
    rng = np.random.default_rng(2)
    scores = direction * np.linspace(0, 6, n) + rng.normal(size=n)
    lab, _, _ = BudgetCalibrator(b, n).decide_many(scores)
    quarters = [int(q.sum()) for q in np.array_split(lab, 4)]
    assert lab.sum() == b and all(abs(q - b / 4) <= 0.25 * b / 4 for q in quarters), quarters
    # A fixed threshold calibrated on the first 10% would not: drift moves its spending to one end.
    fixed = scores >= np.quantile(scores[: n // 10], 1 - b / n)
    assert max(abs(int(q.sum()) - b / 4) for q in np.array_split(fixed, 4)) > 0.5 * b / 4
    # Labels are locally high: above the median of the surrounding window of scores.
    idx = np.flatnonzero(lab)
    local_median = np.array([np.median(scores[max(0, i - 200): i + 200]) for i in idx])
    assert (scores[idx] > local_median).mean() >= 0.85


def test_calibrator_state_round_trip_decides_identically():
    scores = np.random.default_rng(3).random(3000)
    full, thr_full, _ = BudgetCalibrator(100, 3000).decide_many(scores)
    c = BudgetCalibrator(100, 3000)
    a, thr_a, _ = c.decide_many(scores[:1234])
    c2 = BudgetCalibrator.from_state(json.loads(json.dumps(c.state())))
    b, thr_b, _ = c2.decide_many(scores[1234:])
    assert (np.r_[a, b] == full).all()
    np.testing.assert_array_equal(np.r_[thr_a, thr_b], thr_full)


def test_calibrator_rate_target_and_bad_arguments():
    c = BudgetCalibrator(50, rate=0.1)
    assert c.expected == 500
    for kwargs in ({"budget": 5}, {"budget": 5, "expected": 10, "rate": 0.1}, {"budget": -1, "expected": 10},
                   {"budget": 5, "rate": 1.5}):
        with pytest.raises(ValueError):
            BudgetCalibrator(**kwargs)


# -------------------------------------------------------------------------------------- selector
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

    from dal_dist.cli import _register, app
    from dal_dist.pool import write_pool

    _register()
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
