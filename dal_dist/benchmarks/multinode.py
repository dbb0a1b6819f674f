"""Multi-node scaling on one machine: scoring throughput on two 1-CPU Ray nodes vs one 1-CPU node.

Both clusters are real: `ray start --head` on loopback plus `ray start --address` for the second
node, token authentication on (a fresh token per cluster), every process of a cluster tagged
through its environment so that teardown kills exactly those processes and never another
session's Ray (no global `ray stop`). Prints one JSON line; numbers go to notes, never to asserts.

    python -m dal_dist.benchmarks.multinode [--rows N] [--mc-samples T]   (~3 min: two cluster starts)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TAG_VAR = "DAL_MULTINODE_TAG"  # set on every `ray start`; all of that cluster's processes inherit it


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports that were free a moment ago (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries `DAL_MULTINODE_TAG=<tag>` (this user's, readable ones)."""
    import psutil

    want = f"{TAG_VAR}={tag}".encode()
    me = os.getpid()
    pids = []
    for pid in psutil.pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    pids.append(pid)
        except OSError:  # gone, or another user's
            continue
    return pids


def kill_tagged(tag: str, grace_s: float = 5.0) -> int:
    """SIGTERM every tagged process, SIGKILL what is left after `grace_s`; repeat until none remain."""
    import psutil

    killed: set[int] = set()
    for sig_kill in (False, False, True, True):
        procs = []
        for pid in tagged_pids(tag):
            try:
                p = psutil.Process(pid)
                p.kill() if sig_kill else p.terminate()
                procs.append(p)
                killed.add(pid)
            except psutil.Error:
                continue
        if not procs:
            break
        psutil.wait_procs(procs, timeout=grace_s if not sig_kill else 2.0)
    return len(killed)


class LocalCluster:
    """A Ray cluster of `ray start` nodes on 127.0.0.1 with free ports, its own temp dir and token."""

    def __init__(self, cpus_per_node: int = 1, python: str | None = None, token: str | None = None) -> None:
        self.tag = f"dalmn-{os.getpid()}-{secrets.token_hex(4)}"
        # Short path: Ray's unix sockets live under it and must stay under 108 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="dalmn-", dir="/tmp"))
        self.cpus_per_node = cpus_per_node
        bindir = str(Path(python or sys.executable).parent)
        self.env = {**os.environ, TAG_VAR: self.tag,
                    "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),  # a job's `python` = ours
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or secrets.token_hex(32),
                    "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        self.ray = str(Path(bindir) / "ray")
        self.port, self.dashboard_port = 0, 0
        self.nodes = 0
        self.node_tags: list[str] = []  # tags of nodes added with their own tag (see `add_node`)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray_start(self, args: list[str]) -> None:
        # Each node gets its own agent/metrics ports: two nodes on one host would otherwise collide.
        a, g, r, m = free_ports(4)
        cmd = [self.ray, "start", "--num-cpus", str(self.cpus_per_node), "--num-gpus", "0",
               "--temp-dir", str(self.temp_dir), "--disable-usage-stats",
               "--dashboard-agent-listen-port", str(a), "--dashboard-agent-grpc-port", str(g),
               "--runtime-env-agent-port", str(r), "--metrics-export-port", str(m), *args]
        log = self.temp_dir / f"node{self.nodes}.log"
        with open(log, "w") as out:
            rc = subprocess.run(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=180).returncode
        if rc != 0:
            raise RuntimeError(f"`ray start` failed (rc {rc}); see {log}:\n{log.read_text()[-3000:]}")
        self.nodes += 1

    def start(self, nodes: int = 1) -> LocalCluster:
        self.port, self.dashboard_port, client = free_ports(3)
        self._ray_start(["--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
                         "--ray-client-server-port", str(client)])
        for _ in range(nodes - 1):
            self._ray_start(["--address", self.address])
        return self

    def add_node(self) -> str:
        """One more node whose processes carry a tag of their own, so that a test can kill just that node."""
        tag = f"{self.tag}-n{self.nodes}"
        self.node_tags.append(tag)
        cluster_env, self.env = self.env, {**self.env, TAG_VAR: tag}
        try:
            self._ray_start(["--address", self.address])
        finally:
            self.env = cluster_env
        return tag

    def stop(self) -> None:
        for tag in self.node_tags:
            kill_tagged(tag)
        kill_tagged(self.tag)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _score_on(nodes: int, pool: Path, ckpt: Path, out: Path, mc_samples: int, batch_size: int) -> dict[str, Any]:
    """Start a cluster of `nodes` 1-CPU nodes, score the pool from a driver attached to it, tear down."""
    import ray

    from dal_dist.scoring.placement import node_cpus, plan_cpus
    from dal_dist.scoring import score_pool

    # The driver's token is read once per process, so both clusters share this process's token.
    with LocalCluster(cpus_per_node=1, token=os.environ["RAY_AUTH_TOKEN"]) as cluster:
        t = time.time()
        cluster.start(nodes)
        start_s = time.time() - t
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            cpus = node_cpus(ray.nodes())
            # Per-node CPU plan: on 1-CPU nodes the actors reserve 0 so file listing can run.
            reserve, threads = plan_cpus(cpus, nodes, None, None)
            s = score_pool(pool, ckpt, out, acquisitions=["bald"], mc_samples=mc_samples, workers=nodes,
                           cpus_per_worker=reserve, threads_per_worker=threads, batch_size=batch_size,
                           overwrite=True, progress=False)
        finally:
            ray.shutdown()
    return {"nodes": len(cpus), "node_cpus": cpus, "cpus_per_actor": reserve, "threads_per_actor": threads,
            "cluster_start_s": round(start_s, 1), "rows": s.rows, "total_s": round(s.seconds, 1),
            "img_s": s.images_per_s, "steady_img_s": s.steady_images_per_s, "startup_s": s.startup_s}


def run(rows: int = 16384, mc_samples: int = 20, batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Same synth pool and mnist-cnn checkpoint, scored on one node, then on two."""
    # Before Ray reads them: this process drives clusters it starts, with a token of its own.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    from dal_dist.models import CHECKPOINT_FILE, build_model, default_config, save_checkpoint
    from dal_dist.pool import synth_pool

    result: dict[str, Any] = {"bench": "multinode", "model": "mnist-cnn", "rows": rows, "mc_samples": mc_samples,
                              "batch_size": batch_size, "cpus_per_node": 1, "host_cpus": os.cpu_count(),
                              "loadavg_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="dalmn-bench-") as tmp:
        pool, ckpt = Path(tmp) / "pool", Path(tmp) / CHECKPOINT_FILE
        synth_pool(rows, pool, seed=seed)
        save_checkpoint(build_model(default_config("mnist-cnn", 10, seed=seed)), ckpt)
        one = _score_on(1, pool, ckpt, Path(tmp) / "scores1", mc_samples, batch_size)
        two = _score_on(2, pool, ckpt, Path(tmp) / "scores2", mc_samples, batch_size)
    result.update({"one_node": one, "two_nodes": two, "loadavg_after": os.getloadavg()[0]})
    if one["steady_img_s"] and two["steady_img_s"]:
        result["speedup_steady"] = two["steady_img_s"] / one["steady_img_s"]
    result["speedup_total"] = two["img_s"] / one["img_s"] if one["img_s"] else None
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(run(rows=a.rows, mc_samples=a.mc_samples, batch_size=a.batch_size, seed=a.seed)), flush=True)


if __name__ == "__main__":
    main()
