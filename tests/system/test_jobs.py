"""`jobs/*.py` entrypoints: plain `python jobs/x.py` works (local Ray), prints JSON last, takes the CLI's flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer.main

REPO = Path(__file__).resolve().parents[2]
JOBS = {"score_pool.py": "score", "select_ids.py": "select", "active_learning.py": "run"}


def _job(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a plain run starts its own Ray
    env.update(RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_USAGE_STATS_ENABLED="0")
    # Run from elsewhere: the entrypoint must find the installed package on its own.
    return subprocess.run([sys.executable, str(REPO / "jobs" / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path("/"))


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    return json.loads(lines[-1])


def _cli_options(command: str) -> set[str]:
    from dal_dist.cli.main import app  # importing main registers every command

    group = typer.main.get_command(app)
    cmd = group.commands[command]
    return {opt for p in cmd.params for opt in p.opts if opt.startswith("--")}


@pytest.mark.parametrize("job,command", sorted(JOBS.items()))
def test_job_takes_the_cli_flags(job, command):
    out = _job(job, "--help", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for opt in _cli_options(command):
        assert opt in out.stdout, f"jobs/{job} does not take {opt} of `dal-dist {command}`"


def test_job_rejects_unknown_flag():
    out = _job("score_pool.py", "--no-such-flag", timeout=120)
    assert out.returncode != 0 and "no-such-flag" in (out.stderr + out.stdout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from dal_dist.models import build_model, default_config, save_checkpoint
    from dal_dist.pool import write_pool

    d = tmp_path_factory.mktemp("jobs")
    rng = np.random.default_rng(0)
    write_pool(d / "pool", rng.integers(0, 256, (96, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 96),
               ids=np.arange(500, 596))
    save_checkpoint(build_model(default_config("mnist-cnn", 10, seed=0)), d / "model.pt")
    return d


def test_score_then_select_jobs_on_local_ray(tiny):
    summary = _last_json(_job("score_pool.py", "--pool", str(tiny / "pool"), "--checkpoint", str(tiny / "model.pt"),
                              "--out", str(tiny / "scores"), "--acquisition", "bald", "--mc-samples", "4",
                              "--workers", "1", "--batch-size", "32"))
    assert summary["rows"] == 96 and summary["out"] == str(tiny / "scores")
    ids = np.sort(np.concatenate([pq.read_table(f, columns=["id"]).column("id").to_numpy()
                                  for f in sorted((tiny / "scores").glob("*.parquet"))]))
    assert np.array_equal(ids, np.arange(500, 596))  # one row per id

    picked = _last_json(_job("select_ids.py", "--strategy", "topk", "--k", "10", "--by", "bald",
                             "--scores", str(tiny / "scores"), "--out", str(tiny / "pick.parquet")))
    assert picked["k"] == 10
    assert len(set(pq.read_table(tiny / "pick.parquet").column("id").to_pylist()) & set(range(500, 596))) == 10
