"""The driver on a small real pool: a 3-round run, kills (hooked and SIGKILL) + resume, lock, status.

One uninterrupted reference run (module fixture) is compared with a chain of real driver processes
(`python -m dal_dist run`, each killed by `os._exit(137)` at a named point or by SIGKILL at a random
time, then `--resume`d). Both use `executor: local` (train and score in the driver process): resume is
the driver's logic, the same for both executors, and a Ray Train worker group per round would cost
minutes of suite time. The Ray executor's driver path runs in test_oracle's human round trip, and
killed Ray workers (scoring actors, a node, k-center shards) in test_faults.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import yaml

from dal_dist.driver.config import parse_config
from dal_dist.errors import DalDistError
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.state import run_lock
from dal_dist.driver.steps import balanced_sample, round_seed
from dal_dist.driver import run, run_status

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
POOL_ROWS, TEST_ROWS = 600, 300
INITIAL, BUDGET, ROUNDS = 20, 10, 3


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    raw = gzip.open(path).read()
    dims = np.frombuffer(raw[4:4 + 4 * ndim], ">u4").astype(int)
    return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(*dims)


def write_small_pools(mnist_test_dir: Path, out: Path) -> tuple[Path, Path]:
    """600 real MNIST test images as the pool (ids 0..599), the next 300 as the test pool."""
    from dal_dist.pool import write_pool

    x = _read_idx(mnist_test_dir / "t10k-images-idx3-ubyte.gz", 3)[..., None]
    y = _read_idx(mnist_test_dir / "t10k-labels-idx1-ubyte.gz", 1).astype(np.int64)
    pool, test = out / "pool", out / "test"
    if not pool.exists():
        write_pool(pool, x[:POOL_ROWS], y[:POOL_ROWS], meta={"num_classes": 10})
        write_pool(test, x[POOL_ROWS:POOL_ROWS + TEST_ROWS], y[POOL_ROWS:POOL_ROWS + TEST_ROWS],
                   ids=np.arange(POOL_ROWS, POOL_ROWS + TEST_ROWS), meta={"num_classes": 10})
    return pool, test


def small_config(pool: Path, test: Path, **over) -> dict:
    cfg = {"pool": str(pool), "test_pool": str(test), "strategy": {"name": "bald", "mc_samples": 4},
           "initial": {"kind": "balanced", "size": INITIAL}, "budget": BUDGET, "rounds": ROUNDS,
           "train": {"epochs": 1, "batch_size": 16, "workers": 1}, "final_train": False, "workers": 1, "seed": 3,
           "executor": "local"}
    cfg.update(over)
    return cfg


def ledger_rows(run_dir: Path) -> list[tuple]:
    t = LabelLedger(run_dir).table()
    return sorted(zip(*(t.column(c).to_pylist() for c in ("id", "label", "round", "source"))))


@pytest.fixture(scope="module")
def pools(mnist_test_dir, tmp_path_factory):
    return write_small_pools(mnist_test_dir, tmp_path_factory.mktemp("pools"))


@pytest.fixture(scope="module")
def reference(ray_local, pools, tmp_path_factory):
    """One uninterrupted 3-round run: the ledger every interrupted run must end with."""
    run_dir = tmp_path_factory.mktemp("reference")
    t0 = time.monotonic()
    out = run(parse_config(small_config(*pools)), run_dir)
    return {"dir": run_dir, "outcome": out, "seconds": time.monotonic() - t0}


def test_three_rounds_give_exactly_initial_plus_budget_labels(reference, pools):
    run_dir = reference["dir"]
    assert reference["outcome"].status == "done"
    rows = ledger_rows(run_dir)
    ids = [r[0] for r in rows]
    assert len(ids) == INITIAL + ROUNDS * BUDGET and len(set(ids)) == len(ids)
    assert all(0 <= i < POOL_ROWS for i in ids)
    table = ds.dataset(run_dir / "labels", format="parquet").to_table()
    assert table.num_rows == len(ids)
    # The initial set is balanced over the 10 classes; labels match the pool's hidden labels.
    from dal_dist.driver.oracle import SimulatedOracle

    truth = SimulatedOracle(pools[0]).labels(np.array(ids))
    assert [r[1] for r in rows] == truth.tolist()
    init_labels = [r[1] for r in rows if r[2] == 0]
    assert sorted(init_labels) == sorted(list(range(10)) * 2)
    for r in range(1, ROUNDS + 1):
        m = json.loads((run_dir / "rounds" / f"{r:03d}" / "manifest.json").read_text())
        assert m["labels_before"] == INITIAL + (r - 1) * BUDGET and len(m["selected_ids"]) == BUDGET
        assert m["metrics"]["test_accuracy"] is not None and 0 <= m["metrics"]["test_accuracy"] <= 1
        assert set(m["timings"]) >= {"train", "evaluate", "score", "select", "label"}
        assert m["config_hash"] == json.loads((run_dir / "config.json").read_text())["config_hash"]
    st = run_status(run_dir)
    assert st["rounds_completed"] == ROUNDS and st["labels"] == len(ids) and st["complete"]


def _driver(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    env.pop("DAL_DIST_TEST_CRASH_AT", None)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "dal_dist", "run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


def test_killed_driver_resumes_to_the_same_ledger(reference, pools, ray_local, tmp_path):
    """Kills inside steps and between them, one real SIGKILL at a random time, then --resume to the end."""
    address = ray_local.get_runtime_context().gcs_address
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(small_config(*pools, ray={"address": address})))
    run_dir = tmp_path / "run"
    chain = [
        "round1:train+0.5",    # inside training
        "round1:score",        # between evaluate and score (every step boundary is the same mechanism)
        "round2:score+0.3",    # inside scoring
        "round2:label",        # between select and label (selection published, ledger not yet)
        "round2:manifest",     # after the ledger append, before the manifest: labels must not apply twice
    ]  # then round 3 is killed at a random moment
    first = True
    for point in chain:
        args = ["--config", str(cfg_file), "--run-dir", str(run_dir)] if first else ["--resume", str(run_dir)]
        rc, out = _finish(_driver(args, {"DAL_DIST_TEST_CRASH_AT": point}))
        assert rc == 137, f"{point}: expected a crash, rc={rc}\n{out[-3000:]}"
        first = False
    assert run_status(run_dir)["labels"] == INITIAL + 2 * BUDGET  # round 3 not labeled yet
    # One real SIGKILL at a random moment of the rest of round 3, then resume to the end.
    p = _driver(["--resume", str(run_dir)])
    time.sleep(random.Random().uniform(2, 8))
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    rc, out = _finish(_driver(["--resume", str(run_dir), "--config", str(cfg_file)]))
    assert rc == 0, out[-3000:]
    assert ledger_rows(run_dir) == ledger_rows(reference["dir"])
    for r in range(1, ROUNDS + 1):
        ref = json.loads((reference["dir"] / "rounds" / f"{r:03d}" / "manifest.json").read_text())
        got = json.loads((run_dir / "rounds" / f"{r:03d}" / "manifest.json").read_text())
        assert got["selected_ids"] == ref["selected_ids"], f"round {r}"
        assert got["metrics"]["test_accuracy"] == ref["metrics"]["test_accuracy"]
    assert not list(run_dir.rglob(".*staging*")) and not list(run_dir.rglob(".*.tmp"))


def test_second_driver_is_refused(reference):
    run_dir = reference["dir"]
    with run_lock(run_dir):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        p = subprocess.run([sys.executable, "-m", "dal_dist", "run", "--resume", str(run_dir)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert f"run directory {run_dir} is locked by pid {os.getpid()}" in p.stderr
    with run_lock(run_dir):
        with pytest.raises(DalDistError, match="is locked by pid"):
            run(None, run_dir, resume=True)


def test_resume_refuses_a_different_config_and_restart_refuses_an_existing_run(reference, pools):
    cfg = parse_config(small_config(*pools))
    with pytest.raises(DalDistError, match="already holds a run"):
        run(cfg, reference["dir"])
    other = parse_config(small_config(*pools, seed=4))
    with pytest.raises(DalDistError, match="differs from the one this run started with"):
        run(other, reference["dir"], resume=True)
    # Resuming a finished run does nothing and changes nothing.
    before = ledger_rows(reference["dir"])
    assert run(cfg, reference["dir"], resume=True).status == "done"
    assert ledger_rows(reference["dir"]) == before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_run_resumes_on_cpu_with_the_same_config_and_ledger(reference, pools, tmp_path):
    """A run started for a GPU (train.use_gpu) continues on a CPU-only machine with use_gpu=False."""
    cfg = parse_config(small_config(*pools, train={"epochs": 1, "batch_size": 16, "workers": 1, "use_gpu": True}))
    with pytest.raises(DalDistError, match="use_gpu is true but this process sees no CUDA device"):
        run(cfg, tmp_path)
    stored = (tmp_path / "config.json").read_text()
    with pytest.raises(DalDistError, match="use_gpu overrides the stored config of a resumed run"):
        run(cfg, tmp_path / "new", use_gpu=False)
    assert run(None, tmp_path, resume=True, use_gpu=False).status == "done"
    assert (tmp_path / "config.json").read_text() == stored  # the run's config and hash are unchanged
    assert json.loads(stored)["config"]["train"]["use_gpu"] is True
    trained = json.loads((tmp_path / "rounds" / "001" / "train.json").read_text())
    assert trained["use_gpu"] is False and trained["executor"] == "local"
    assert ledger_rows(tmp_path) == ledger_rows(reference["dir"])  # placement does not change the result


def test_status_cli_json(reference):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "dal_dist", "status", str(reference["dir"]), "--json"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["rounds_completed"] == ROUNDS and st["labels"] == INITIAL + ROUNDS * BUDGET and st["next"] is None


def test_balanced_sample_and_round_seeds_are_deterministic():
    ids = np.arange(100)
    labels = ids % 4
    a = balanced_sample(ids, labels, 10, np.random.default_rng(1))
    b = balanced_sample(ids[::-1], labels[::-1], 10, np.random.default_rng(1))  # input order does not matter
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10
    assert sorted(np.bincount(labels[a]).tolist()) == [2, 2, 3, 3]
    assert round_seed(0, 1, "train") == round_seed(0, 1, "train") != round_seed(0, 2, "train")


def test_failed_manifest_write_keeps_state_and_resume_finishes(pools, tmp_path, monkeypatch):
    """A write that fails (injected ENOSPC) leaves the ledger and earlier outputs readable; resume completes."""
    import dal_dist.driver.rounds as rounds
    import dal_dist.driver.steps as steps

    monkeypatch.setattr(rounds, "last_round", lambda cfg: 0)  # round 0 only: no training needed here
    real = steps.write_json_atomic

    def full_disk(path, obj):
        if Path(path).name == "manifest.json":
            raise OSError(28, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(steps, "write_json_atomic", full_disk)
    cfg = parse_config(small_config(*pools))
    with pytest.raises(DalDistError, match=r"round 0: step manifest failed .*No space left.*--resume"):
        run(cfg, tmp_path)
    assert LabelLedger(tmp_path).count() == INITIAL and not (tmp_path / "rounds" / "000" / "manifest.json").exists()
    assert not list(tmp_path.rglob(".*.tmp"))
    monkeypatch.setattr(steps, "write_json_atomic", real)
    assert run(None, tmp_path, resume=True).status == "done"
    assert LabelLedger(tmp_path).count() == INITIAL  # the label step was not applied twice
    assert json.loads((tmp_path / "rounds" / "000" / "manifest.json").read_text())["labels_count"] == INITIAL
