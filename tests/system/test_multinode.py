"""A real two-node Ray cluster on 127.0.0.1 (`scripts/multinode.sh`), and GPU requests checked without a GPU."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dal_dist.benchmarks.multinode import kill_tagged, tagged_pids
from dal_dist.errors import DalDistError
from dal_dist.scoring.placement import ActorResources, gpus_per_actor, plan_actor_resources, plan_cpus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster_tag():
    """The tag the script's cluster processes carry; whatever happens, none is left running."""
    tag = f"dalmn-test-{os.getpid()}-{secrets.token_hex(3)}"
    yield tag
    kill_tagged(tag)  # after a timeout or a kill -9 of the script its trap never ran
    for leftover in Path("/tmp").glob(f"{tag}.*"):  # the script's Ray temp dir, same reason
        shutil.rmtree(leftover, ignore_errors=True)
    assert not tagged_pids(tag)


@pytest.mark.slow  # ~2 min; the same script is `make multinode`, and test_faults' two-node test runs a 2-node cluster
def test_two_node_scoring_job(tmp_path, cluster_tag):
    env = {**os.environ, "MULTINODE_TAG": cluster_tag, "WORK": str(tmp_path), "PYTHON": sys.executable,
           "JOB_TIMEOUT": "240"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "multinode.sh"), "512"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["multinode"] == "ok" and result["rows"] == 512
    # Check independently of the script: exactly one row per pool id.
    from dal_dist.pool import iter_batches
    from dal_dist.scoring import read_scores_table

    want = np.sort(np.concatenate([b.column("id").to_numpy() for b in iter_batches(tmp_path / "pool", columns=["id"])]))
    got = np.sort(read_scores_table(tmp_path / "scores", columns=["id"]).column("id").to_numpy())
    assert np.array_equal(got, want)
    assert not tagged_pids(cluster_tag), "the script left cluster processes behind"


# --- GPU placement, without a GPU ----------------------------------------------------------------

def _ray_accepts(kwargs: dict) -> None:
    """Ray's own option validation for an actor asking for these resources (no cluster needed)."""
    from ray._common.ray_option_utils import validate_actor_options

    validate_actor_options(dict(kwargs), in_options=False)


@pytest.mark.parametrize("given,workers,cluster_gpus,want", [
    (0.5, 4, 2.0, 0.5),     # two actors per card
    (0.25, 3, 0.0, 0.25),   # asked for: kept even if no GPU node exists yet (autoscaler)
    (2.0, 1, 8.0, 2.0),     # whole GPUs above 1
    (0.0, 2, 4.0, 0.0),     # 0 forces CPU on a GPU cluster
    (None, 2, 0.0, 0.0),    # auto on a CPU cluster
    (None, 4, 2.0, 0.5),    # auto: GPUs shared evenly
    (None, 3, 1.0, 0.33),   # rounded down so the shares fit one card
    (None, 2, 8.0, 1.0),    # at most one per actor
])
def test_gpu_request(given, workers, cluster_gpus, want):
    g = gpus_per_actor(given, workers, cluster_gpus)
    assert g == pytest.approx(want)
    assert g * workers <= max(cluster_gpus, g * workers) + 1e-9
    res = ActorResources(num_cpus=0.5, num_gpus=g)
    kwargs = res.map_batches_kwargs()
    assert kwargs["num_cpus"] == 0.5
    assert ("num_gpus" in kwargs) == (g > 0) and kwargs.get("num_gpus", 0) == g
    assert res.device == ("cuda" if g > 0 else "cpu")
    _ray_accepts(kwargs)


@pytest.mark.parametrize("bad", [-0.5, 1.5])
def test_gpu_request_rejected(bad):
    with pytest.raises(DalDistError, match="--gpus-per-worker"):
        gpus_per_actor(bad, 2, 4.0)


def test_auto_shares_fit_the_cards():
    for gpus in (1.0, 2.0, 3.0):
        for workers in range(1, 13):
            g = gpus_per_actor(None, workers, gpus)
            assert 0 < g <= 1 and g * workers <= gpus + 1e-9
            _ray_accepts({"num_gpus": g})


def test_plan_actor_resources_from_cluster_totals():
    res = plan_actor_resources({"CPU": 16.0, "GPU": 2.0}, workers=4, gpus_per_worker=None, cpus_per_worker=1.0)
    assert res.map_batches_kwargs() == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert plan_actor_resources({"CPU": 4.0}, 2, None, 1.0).map_batches_kwargs() == {"num_cpus": 1.0}


@pytest.mark.parametrize("nodes,workers,want_cpus", [
    ([1.0, 1.0], 2, 0.0),   # two 1-CPU nodes: 0.5 each would leave no node a whole CPU for listing
    ([2.0], 2, 0.5),        # one node: the single-node rule
    ([1.0], 1, 0.0),
    ([8.0, 8.0], 4, 1.0),
    ([4.0, 2.0], 4, 0.5),   # the smallest node decides
])
def test_plan_cpus_leaves_one_node_a_whole_cpu(nodes, workers, want_cpus):
    cpus, threads = plan_cpus(nodes, workers, None, None)
    assert cpus == pytest.approx(want_cpus) and threads >= 1
    # Pigeonhole: some node holds <= ceil(workers / nodes) actors and keeps >= 1 CPU free.
    per_node = -(-workers // len(nodes))
    assert min(nodes) - cpus * per_node >= 1 - 1e-9


def test_plan_cpus_rejects_a_reservation_that_starves_reads():
    with pytest.raises(DalDistError, match="free CPU"):
        plan_cpus([1.0, 1.0], 2, 0.5, None)
