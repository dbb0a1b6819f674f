"""Ctrl-C and SIGTERM during scoring: nothing published, no staging left, the previous output intact."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from dal_dist.scoring import SCORES_MARKER, Terminated, read_scores_table, score_pool
from dal_dist.interrupts import deferred_signals, sigterm_raises
from dal_dist.scoring.scorer import BatchScorer
from scoring_helpers import tree


def _hidden(path):
    return sorted(p.name for p in path.iterdir() if p.name.startswith("."))


def _interrupt_on_second_batch(monkeypatch, action):
    real = BatchScorer.__call__
    calls = []

    def call(self, batch):
        calls.append(1)
        if len(calls) == 2:
            action()
        return real(self, batch)

    monkeypatch.setattr(BatchScorer, "__call__", call)


def test_ctrl_c_while_scoring_locally_publishes_nothing_and_keeps_the_previous_output(tmp_path, small_pool, ckpt,
                                                                                    monkeypatch):
    out = tmp_path / "scores"
    score_pool(small_pool, ckpt, out, mc_samples=2, executor="local", progress=False)
    before = tree(out)

    def ctrl_c():
        raise KeyboardInterrupt

    _interrupt_on_second_batch(monkeypatch, ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        score_pool(small_pool, ckpt, out, mc_samples=3, overwrite=True, executor="local", progress=False,
                   batch_size=32)
    assert tree(out) == before and _hidden(tmp_path) == []
    _interrupt_on_second_batch(monkeypatch, ctrl_c)
    with pytest.raises(KeyboardInterrupt):  # a first run: no output appears at all
        score_pool(small_pool, ckpt, tmp_path / "fresh", executor="local", progress=False, batch_size=32)
    assert not (tmp_path / "fresh").exists() and _hidden(tmp_path) == []


def test_sigterm_while_scoring_locally_raises_terminated_and_leaves_nothing(tmp_path, small_pool, ckpt, monkeypatch):
    _interrupt_on_second_batch(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as err:
        score_pool(small_pool, ckpt, tmp_path / "scores", executor="local", progress=False, batch_size=32)
    assert err.value.exit_code == 143 and isinstance(err.value, KeyboardInterrupt)
    assert not (tmp_path / "scores").exists() and _hidden(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is only ours while scoring runs


def test_signals_during_publish_wait_for_the_renames(tmp_path, small_pool, ckpt, monkeypatch):
    import dal_dist.scoring.publish as publish

    real = publish.promote

    def promote(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives between "old output aside" and "new output in place"
        time.sleep(0.05)
        real(*args, **kwargs)

    monkeypatch.setattr(publish, "promote", promote)
    out = tmp_path / "scores"
    with pytest.raises(KeyboardInterrupt):
        score_pool(small_pool, ckpt, out, mc_samples=2, executor="local", progress=False)
    assert read_scores_table(out).num_rows == 120 and (out / SCORES_MARKER).exists()  # whole, never half
    assert _hidden(tmp_path) == []


def test_deferred_signals_raise_after_the_block():
    done = []
    with pytest.raises(Terminated):
        with sigterm_raises(), deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            done.append(1)
    assert done == [1]
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append(2)
    assert done == [1, 2]


def test_sigterm_during_ray_scoring_stops_the_job_and_removes_staging(tmp_path, ray_local, mnist_test_dir, ckpt):
    from dal_dist.pool import write_pool
    from scoring_helpers import mnist

    x, y = mnist(mnist_test_dir, 3000)
    write_pool(tmp_path / "pool", x, y, chunk_rows=500)
    out = tmp_path / "scores"
    score_pool(tmp_path / "pool", ckpt, out, mc_samples=2, executor="local", progress=False)
    before = tree(out)
    running = threading.Event()
    running.set()

    def terminate_once_a_file_is_staged():
        deadline = time.time() + 300
        while running.is_set() and time.time() < deadline:
            if any(tmp_path.glob(".scores.staging-*/data/*.parquet")):  # 2048 of 3000 rows written
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)

    th = threading.Thread(target=terminate_once_a_file_is_staged, daemon=True)
    th.start()
    try:
        with pytest.raises(Terminated):
            # T = 4: the ~950 rows left after the first staged file still take seconds, the watcher polls at 20 ms
            score_pool(tmp_path / "pool", ckpt, out, mc_samples=4, workers=1, batch_size=32, overwrite=True,
                       progress=False)
    finally:
        running.clear()
        th.join()
    assert tree(out) == before and _hidden(tmp_path) == []
    time.sleep(3)  # tasks that were still finishing must not bring the staging directory back
    assert _hidden(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["pool", "scores"]
    # Ray is still usable afterwards.
    s = score_pool(tmp_path / "pool", ckpt, out, mc_samples=2, workers=1, overwrite=True, progress=False)
    assert s.rows == 3000 and tree(out) != before
