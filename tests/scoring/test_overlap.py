"""Decode/copy of batch i+1 beside compute of batch i: it really overlaps, the model never runs two batches at
once, and the scores, rejects and row set are exactly those of one batch at a time (in process and on Ray)."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dal_dist.scoring import BatchScorer, read_scores_table, score_pool
from dal_dist.scoring.pipeline import actor_calls
from dal_dist.errors import DalDistError
from dal_dist.scoring.scorer import check_overlap, resolve_overlap, score_batches
from scoring_helpers import ACQ, mnist, write_mixed_pool

WAIT_S = 10.0  # how long a prepare waits to see the previous batch in the model (only a broken overlap waits)


def _batches(pool, rows: int) -> list[pa.Table]:
    return [pa.Table.from_batches([b]) for f in sorted(pool.glob("*.parquet"))
            for b in pq.ParquetFile(f).iter_batches(batch_size=rows)]


class _Handshake(BatchScorer):
    """Each prepare after the first waits for the previous batch to enter the model: true only with overlap."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.in_model = threading.Event()
        self.prepares = 0
        self.saw_model_running: list[bool] = []
        self.threads: set[str] = set()

    def prepare(self, batch):
        if self.prepares:
            self.saw_model_running.append(self.in_model.wait(WAIT_S))
        self.prepares += 1
        self.threads.add(threading.current_thread().name)
        return super().prepare(batch)

    def score_inputs(self, ids, x, is_labeled=None):
        self.in_model.set()
        try:
            time.sleep(0.05)  # the model's turn lasts long enough for the next prepare to see it
            return super().score_inputs(ids, x, is_labeled)
        finally:
            self.in_model.clear()


def test_overlap_is_on_where_the_host_would_starve_a_gpu():
    assert resolve_overlap(None, "cuda") and not resolve_overlap(None, "cpu")
    assert resolve_overlap(True, "cpu") and not resolve_overlap(False, "cuda")
    assert [check_overlap(v) for v in ("auto", "on", "off")] == [None, True, False]
    with pytest.raises(DalDistError, match="--overlap must be one of auto, on, off, got 'yes'"):
        check_overlap("yes")
    assert actor_calls(False) == {}
    assert actor_calls(True) == {"max_concurrent_calls_per_actor": 2, "enable_true_multi_threading": True}


def test_in_process_overlap_prepares_the_next_batch_while_the_model_runs(tmp_path, mnist_test_dir, ckpt):
    x, y = mnist(mnist_test_dir, 300)
    write_mixed_pool(tmp_path / "pool", x, y)  # PNG and raw rows, three bad ones
    batches = _batches(tmp_path / "pool", 40)
    rejects = {}
    plain = BatchScorer(ckpt.read_bytes(), ACQ, mc_samples=6, device="cpu", overlap=False)
    plain.write_rejects = lambda ids, reasons: rejects.setdefault("plain", []).extend(zip(ids.tolist(), reasons))
    one_at_a_time = list(score_batches(plain, batches))

    scorer = _Handshake(ckpt.read_bytes(), ACQ, mc_samples=6, device="cpu", overlap=True)
    scorer.write_rejects = lambda ids, reasons: rejects.setdefault("overlap", []).extend(zip(ids.tolist(), reasons))
    overlapped = list(score_batches(scorer, batches))

    assert len(scorer.saw_model_running) == len(batches) - 1 and all(scorer.saw_model_running)
    assert any(t.startswith("dal-dist-prepare") for t in scorer.threads)  # prepared off the model's thread
    assert len(overlapped) == len(one_at_a_time) == len(batches)
    for a, b in zip(overlapped, one_at_a_time):  # in order, identical: same rows, same dropout masks
        assert a.equals(b)
    assert sorted(rejects["overlap"]) == sorted(rejects["plain"]) and len(rejects["plain"]) == 3


def test_an_error_while_preparing_ahead_surfaces_and_stops_the_loop(ckpt):
    class Broken(BatchScorer):
        def prepare(self, batch):
            if batch.column("id")[0].as_py() == 64:
                raise ValueError("bad batch 64")
            return super().prepare(batch)

    scorer = Broken(ckpt.read_bytes(), ["bald"], mc_samples=2, device="cpu", overlap=True)
    raw = np.zeros((32, 28, 28, 1), np.uint8)
    batches = [pa.table({"id": pa.array(np.arange(s, s + 32), pa.int64()),
                         "image": pa.array([r.tobytes() for r in raw], pa.binary()),
                         "height": pa.array([28] * 32, pa.int32()), "width": pa.array([28] * 32, pa.int32()),
                         "channels": pa.array([1] * 32, pa.int32())}) for s in (0, 32, 64, 96)]
    out = []
    with pytest.raises(ValueError, match="bad batch 64"):
        for t in score_batches(scorer, batches):
            out.append(t)
    assert [t.column("id")[0].as_py() for t in out] == [0, 32]  # every batch before the bad one, none after


class _Recording(BatchScorer):
    """Appends (phase, thread, start, end, batch ids) of every prepare and model turn to a file per actor process."""

    log_dir = ""  # set by the test before the class travels (by value) to the actor

    def _record(self, phase, t0, ids):
        with open(os.path.join(self.log_dir, f"{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps([phase, threading.get_ident(), t0, time.time(), ids]) + "\n")

    def prepare(self, batch):
        t0 = time.time()
        try:
            return super().prepare(batch)
        finally:
            self._record("prepare", t0, batch.column("id").to_pylist())

    def score_inputs(self, ids, x, is_labeled=None):
        t0 = time.time()
        time.sleep(0.1)  # a model turn long enough for the other call's prepare to fall inside it
        try:
            return super().score_inputs(ids, x, is_labeled)
        finally:
            self._record("model", t0, ids.tolist())


def test_ray_actors_take_two_batches_and_score_exactly_as_one_at_a_time(tmp_path, ray_local, mnist_test_dir,
                                                                        ckpt, monkeypatch):
    """One actor, overlap on (forced on CPU): two calls in it at once, one model turn at a time, and every
    batch's scores exactly what a scorer taking one batch at a time gives that batch."""
    import sys

    from ray import cloudpickle

    import dal_dist.scoring.pipeline as pipeline

    x, y = mnist(mnist_test_dir, 400)
    pool = write_mixed_pool(tmp_path / "pool", x, y, files=2)
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setattr(_Recording, "log_dir", str(logs))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actor cannot import a test module
    run_ray = pipeline.run_ray
    monkeypatch.setattr(pipeline, "run_ray", lambda ray, plan, **kw: run_ray(ray, plan, **kw, scorer_cls=_Recording))
    summary = score_pool(tmp_path / "pool", ckpt, tmp_path / "scores", acquisitions=ACQ, mc_samples=6, workers=1,
                         batch_size=50, progress=False, overlap=True)
    assert summary.rows == 400 - 3 and summary.rejects == 3

    events = [json.loads(line) for f in logs.glob("*.jsonl") for line in f.read_text().splitlines()]
    model = sorted((e[2], e[3]) for e in events if e[0] == "model")
    prepares = [e for e in events if e[0] == "prepare"]
    assert len(model) == len(prepares) >= 8  # every batch had one turn in the model
    assert all(end <= start for (_, end), (start, _) in zip(model, model[1:]))  # never two batches at once
    assert len({e[1] for e in events}) >= 2  # Ray ran the calls on more than one thread of the actor
    assert any(any(p[2] < m1 and m0 < p[3] for m0, m1 in model) for p in prepares)  # a prepare beside a model turn

    scores = read_scores_table(tmp_path / "scores")
    row_of = {i: r for r, i in enumerate(scores.column("id").to_pylist())}
    by_id = {i: r for r, i in enumerate(pool.column("id").to_pylist())}
    plain = BatchScorer(ckpt.read_bytes(), ACQ, mc_samples=6, device="cpu", overlap=False)
    for p in prepares:  # each batch as Ray Data cut it, scored alone in this process
        expected = plain(pool.take([by_id[i] for i in p[4]]).drop(["label"]))
        got = scores.take([row_of[i] for i in expected.column("id").to_pylist()])
        assert got.select(expected.column_names).equals(expected)
