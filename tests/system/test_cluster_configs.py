"""Every YAML in cluster/ parses and holds what `ray up` / KubeRay need: nodes, installs, GPUs, auth, jobs."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

CLUSTER = REPO / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml")) + sorted(CLUSTER.rglob("*.yml"))
LAUNCHER = [p for p in YAMLS if "kuberay" not in p.parts]
KUBERAY = [p for p in YAMLS if "kuberay" in p.parts]
# Sample values for the ${VARS} the KubeRay manifests take through envsubst (see docs/cluster.md).
ENVSUBST = {"DAL_IMAGE": "registry.example.com/dal-dist:0.1.0", "DAL_GPU_WORKERS_MAX": "4", "DAL_GPUS_PER_POD": "1",
            "DAL_WORKER_CPU": "8", "DAL_WORKER_MEMORY": "32Gi", "DAL_POOL": "/data/pool",
            "DAL_CHECKPOINT": "/data/model.pt", "DAL_SCORES": "/data/scores", "DAL_WORKERS": "2"}


def _load(path: Path, subst: bool = False) -> dict:
    text = path.read_text()
    if subst:
        missing = sorted(set(re.findall(r"\$\{(\w+)\}", text)) - set(ENVSUBST))
        assert not missing, f"{path.name}: undocumented parameters {missing}"
        text = re.sub(r"\$\{(\w+)\}", lambda m: ENVSUBST[m.group(1)], text)
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert len(docs) == 1, f"{path.name}: expected one document"
    return docs[0]


def _job_scripts(command: str) -> list[str]:
    return [t for t in shlex.split(command) if t.startswith("jobs/")]


def test_there_is_something_to_check():
    assert {p.name for p in LAUNCHER} >= {"aws-gpu.yaml", "onprem.yaml"}
    assert {p.name for p in KUBERAY} >= {"raycluster.yaml", "rayjob-score.yaml"}


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_config(path):
    cfg = _load(path)
    assert cfg["cluster_name"]
    provider = cfg["provider"]
    assert provider["type"] in ("aws", "gcp", "azure", "local")
    if provider["type"] == "local":
        assert provider["head_ip"] and provider["worker_ips"]
    else:
        types = cfg["available_node_types"]
        assert cfg["head_node_type"] in types
        workers = [t for t in types if t != cfg["head_node_type"]]
        assert workers, "no worker node type"
        assert any(types[t]["max_workers"] > types[t].get("min_workers", 0) for t in workers), "nothing autoscales"
    installs = " ".join(cfg.get("setup_commands", []) + cfg.get("head_setup_commands", [])
                        + cfg.get("worker_setup_commands", []))
    assert re.search(r"pip install .*dal-dist", installs), "setup commands do not install dal-dist"
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--head" in head and "--dashboard-host=127.0.0.1" in head, "dashboard must bind to loopback"
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd, f"token auth off in: {cmd}"
    assert any("auth_token" in dst for dst in cfg.get("file_mounts", {})), "the token file is not shipped"


def test_aws_gpu_extra_on_gpu_nodes():
    cfg = _load(CLUSTER / "aws-gpu.yaml")
    assert any("[gpu]" in c for c in cfg["worker_setup_commands"])
    assert cfg["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifest(path):
    doc = _load(path, subst=True)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] in ("RayCluster", "RayJob")
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP", "the head must not get an external Service"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == ENVSUBST["DAL_IMAGE"]
    groups = spec["workerGroupSpecs"]
    gpu = [g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu, "no GPU worker group"
    for g in gpu:
        res = g["template"]["spec"]["containers"][0]["resources"]
        assert int(res["limits"]["nvidia.com/gpu"]) >= 1
        assert isinstance(g["maxReplicas"], int) and g["maxReplicas"] >= g["minReplicas"]
    if doc["kind"] == "RayJob":
        scripts = _job_scripts(doc["spec"]["entrypoint"])
        assert scripts == ["jobs/score_pool.py"]


def test_entrypoints_named_anywhere_exist():
    """Every `jobs/...` named in a config or in docs/cluster.md is a file in the repository."""
    named = set()
    for path in YAMLS + [REPO / "docs" / "cluster.md"]:
        named |= set(re.findall(r"jobs/[\w./-]+\.py", path.read_text()))
    assert "jobs/score_pool.py" in named
    for rel in named:
        assert (REPO / rel).is_file(), f"{rel} is named but does not exist"


def test_no_secret_in_configs():
    for path in YAMLS:
        text = path.read_text()
        assert not re.search(r"RAY_AUTH_TOKEN\s*[:=]\s*['\"]?[0-9a-f]{16,}", text), f"{path.name} embeds a token"
    assert os.access(REPO / "scripts" / "multinode.sh", os.X_OK)
