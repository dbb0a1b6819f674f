"""A local Ray that dal-dist starts itself listens on loopback only (issue 16: network exposure)."""

from __future__ import annotations

import json
import subprocess
import sys

LIST_LISTENERS = """
import json, os, time, psutil
from dal_dist.ray_connect import connect
import ray.data  # Ray imported before connect(), as the scoring pipeline does
ray, started = connect(None, num_cpus=1, log_to_driver=False)
ray.get(ray.remote(lambda: 1).remote())
time.sleep(2)
me = psutil.Process(os.getpid())
found = []
for p in [me] + me.children(recursive=True):
    try:
        found += [(p.name(), c.laddr.ip) for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        pass
print(json.dumps({"started": started, "listeners": found}))
"""


def test_local_ray_binds_every_server_to_loopback():
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "RAY_USAGE_STATS_ENABLED": "0"}  # no RAY_ADDRESS
    out = subprocess.run([sys.executable, "-c", LIST_LISTENERS], capture_output=True, text=True, timeout=180,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["started"] is True
    names = {name for name, _ in got["listeners"]}
    assert {"gcs_server", "raylet"} <= names, got  # the check saw Ray's servers at all
    exposed = [(n, ip) for n, ip in got["listeners"] if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert exposed == []
