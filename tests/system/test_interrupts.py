"""Real Ctrl-C (SIGINT) and SIGTERM sent to real `dal-dist` processes at chosen moments of `score`, `select`
and `run`: exit 130 / 143, a one-line message and no traceback, nothing half-published, no staging left, and
the interrupted work can be redone (issue 16). Ingest's interrupts are in tests/pool/test_pool_publish.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _start(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0", RAY_DATA_DISABLE_PROGRESS_BARS="1")
    return subprocess.Popen([sys.executable, "-m", "dal_dist", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"process ended before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _interrupt(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, err


def _reads_under(pid: int, directory: Path) -> bool:
    """Whether process `pid` has a file under `directory` open (it is reading its input)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(directory)):
                return True
        except OSError:
            continue
    return False


def _assert_one_line(err: str, expected: str) -> None:
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(expected), err[-3000:]


@pytest.fixture(scope="module")
def pool_and_model(tmp_path_factory):
    from dal_dist.models import build_model, default_config, save_checkpoint
    from dal_dist.pool import synth_pool

    d = tmp_path_factory.mktemp("interrupts")
    synth_pool(3000, d / "pool", seed=0)
    save_checkpoint(build_model(default_config("mnist-cnn", 10)), d / "model.pt")
    return d


def test_ctrl_c_during_score_exits_130_and_publishes_nothing(pool_and_model, tmp_path):
    out = tmp_path / "scores"
    proc = _start("score", "--pool", str(pool_and_model / "pool"), "--checkpoint", str(pool_and_model / "model.pt"),
                  "--out", str(out), "--acquisition", "bald", "--mc-samples", "50", "--batch-size", "64")
    _wait_for(proc, lambda: any(p.name.startswith(".scores.staging-") for p in tmp_path.iterdir()), "staging")
    code, err = _interrupt(proc, signal.SIGINT)
    assert code == 130
    _assert_one_line(err, "interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no staging


def test_sigterm_during_select_exits_143_and_writes_no_selection(tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "selection"))
    from selection_helpers import write_scores

    rng = np.random.default_rng(0)
    n = 300_000
    scores = write_scores(tmp_path / "scores", np.arange(n, dtype=np.int64),
                          rng.standard_normal((n, 64)).astype(np.float32), files=4)
    out = tmp_path / "pick.parquet"
    proc = _start("select", "--scores", str(scores), "--strategy", "kcenter", "--k", "20000", "--out", str(out))
    _wait_for(proc, lambda: _reads_under(proc.pid, scores), "the scores being read")
    time.sleep(1.0)  # into the greedy picks
    code, err = _interrupt(proc, signal.SIGTERM)
    assert code == 143
    _assert_one_line(err, "terminated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores"]


def test_sigterm_during_a_run_exits_143_and_resume_finishes(pool_and_model, tmp_path):
    cfg = {"pool": str(pool_and_model / "pool"), "strategy": {"name": "bald", "mc_samples": 4, "subset": 300},
           "budget": 10, "rounds": 2, "initial": {"kind": "balanced", "size": 20}, "executor": "local",
           "final_train": False, "train": {"epochs": 3}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    proc = _start("run", "--config", str(config), "--run-dir", str(run_dir))
    _wait_for(proc, lambda: (run_dir / "rounds" / "001").is_dir(), "round 1")
    code, err = _interrupt(proc, signal.SIGTERM)
    assert code == 143
    _assert_one_line(err, "terminated")
    assert not list(run_dir.rglob(".*staging*"))
    resumed = subprocess.run([sys.executable, "-m", "dal_dist", "run", "--resume", str(run_dir), "--quiet"],
                             capture_output=True, text=True, cwd=REPO, timeout=600,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    from dal_dist.driver import LabelLedger

    assert LabelLedger(run_dir).count() == 20 + 2 * 10  # nothing lost, nothing applied twice
