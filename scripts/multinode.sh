#!/usr/bin/env bash
# A real two-node Ray cluster on this machine, one scoring job through `ray job submit`, a check of
# its output (one row per pool id), and both nodes stopped on every exit path.
#
#   scripts/multinode.sh [ROWS]        (default 2048)
#   env: PYTHON (default .venv/bin/python), WORK (keep pool/scores there; default a temp dir),
#        MULTINODE_TAG (name this cluster's processes; the tests use it to clean up after a kill -9)
#
# Safe on a shared machine: it never runs `ray stop` (which stops every Ray on the host). Every
# process of this cluster inherits DAL_MULTINODE_TAG=<tag> from `ray start`; teardown kills exactly
# the processes whose environment carries it. Token auth stays on, with a fresh token for this run.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-2048}
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
BIN=$(cd "$(dirname "$PYTHON")" && pwd)
RAY="$BIN/ray"
TAG=${MULTINODE_TAG:-dalmn-$$-$RANDOM}
[[ $TAG =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || { echo "multinode: MULTINODE_TAG must be 1-40 of [A-Za-z0-9_.-]" >&2; exit 2; }
SUBMIT=
TMP=$(mktemp -d "/tmp/$TAG.XXXX")   # short: Ray's unix sockets live under it (108-byte limit)
WORK=${WORK:-$TMP/work}
mkdir -p "$WORK"

tagged_pids() {
  local d
  for d in /proc/[0-9]*; do
    if tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qx "DAL_MULTINODE_TAG=$TAG"; then echo "${d#/proc/}"; fi
  done
}

teardown() {
  local rc=$? pids i
  trap - EXIT INT TERM
  [ -n "${SUBMIT:-}" ] && kill "$SUBMIT" 2>/dev/null
  for i in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(tagged_pids)
    [ -z "$pids" ] && break
    if [ "$i" -le 3 ]; then kill -TERM $pids 2>/dev/null || true; else kill -KILL $pids 2>/dev/null || true; fi
    sleep 1
  done
  [ -n "$(tagged_pids)" ] && echo "multinode: processes tagged $TAG survived teardown" >&2 && rc=1
  rm -rf "$TMP"
  echo "multinode: cluster $TAG stopped" >&2
  exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

free_ports() { "$PYTHON" -c "
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(('127.0.0.1', 0)) for x in s]
print(' '.join(str(x.getsockname()[1]) for x in s))" "$1"; }

# What every node (and so every job driver and worker) inherits.
export PATH="$BIN:$PATH"                       # a job's `python` is this interpreter
export RAY_AUTH_MODE=token                     # explicit, on every node and for the job CLI
export RAY_AUTH_TOKEN=${RAY_AUTH_TOKEN:-$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')}
export RAY_DATA_DISABLE_PROGRESS_BARS=1 RAY_USAGE_STATS_ENABLED=0

node_start() {  # each node gets its own agent/metrics ports: two nodes on one host would collide
  local a g r m
  read -r a g r m <<<"$(free_ports 4)"
  env DAL_MULTINODE_TAG="$TAG" "$RAY" start --num-cpus 1 --num-gpus 0 --temp-dir "$TMP" --disable-usage-stats \
    --dashboard-agent-listen-port "$a" --dashboard-agent-grpc-port "$g" --runtime-env-agent-port "$r" \
    --metrics-export-port "$m" "$@"
}

read -r PORT DASH CLIENT <<<"$(free_ports 3)"
echo "multinode: tag $TAG, GCS 127.0.0.1:$PORT, dashboard/job API http://127.0.0.1:$DASH, work $WORK" >&2

# Pool and checkpoint first (not timed against the cluster).
"$BIN/dal-dist" pool synth --n "$ROWS" --out "$WORK/pool" >&2
"$BIN/dal-dist" model init --model mnist-cnn --classes 10 --out "$WORK/model.pt" >&2

node_start --head --node-ip-address 127.0.0.1 --port "$PORT" --dashboard-host 127.0.0.1 \
  --dashboard-port "$DASH" --ray-client-server-port "$CLIENT" >"$TMP/head.log" 2>&1 \
  || { cat "$TMP/head.log" >&2; exit 1; }
node_start --address "127.0.0.1:$PORT" >"$TMP/node2.log" 2>&1 || { cat "$TMP/node2.log" >&2; exit 1; }
echo "multinode: 2 nodes up" >&2

# The job: same flags as `dal-dist score`; 2 actors, spread over the 2 nodes by Ray Data.
# The default CPU reservation keeps a whole CPU free on some node for Ray Data's file listing
# (dal_dist.placement.plan_cpus): on two 1-CPU nodes each actor reserves 0 and runs 1 thread.
# Run in the background and `wait`: bash runs the INT/TERM trap only between commands.
timeout "${JOB_TIMEOUT:-600}" "$RAY" job submit --address "http://127.0.0.1:$DASH" --submission-id "$TAG-score" \
  --working-dir . --runtime-env-json '{"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}}' \
  -- python jobs/score_pool.py --pool "$WORK/pool" --checkpoint "$WORK/model.pt" --out "$WORK/scores" \
  --acquisition bald,entropy --mc-samples 5 --workers 2 --batch-size 128 \
  >"$WORK/job.log" 2>&1 &
SUBMIT=$!
wait "$SUBMIT" || { cat "$WORK/job.log" >&2; exit 1; }
SUBMIT=

# The job's summary is its last JSON line; the output must hold exactly one row per pool id.
SUMMARY=$(grep '^{' "$WORK/job.log" | tail -n 1)
"$PYTHON" - "$WORK/pool" "$WORK/scores" "$SUMMARY" <<'EOF'
import json, sys
import numpy as np
from dal_dist.pool import iter_batches
from dal_dist.scoring import read_scores_table
pool, scores, summary = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
want = np.sort(np.concatenate([b.column("id").to_numpy() for b in iter_batches(pool, columns=["id"])]))
got = np.sort(read_scores_table(scores, columns=["id"]).column("id").to_numpy())
assert len(np.unique(got)) == len(got), "duplicate ids in the scores"
assert np.array_equal(got, want), f"scores hold {len(got)} ids, the pool {len(want)}"
assert summary["rows"] == len(want), summary
print(json.dumps({"multinode": "ok", "nodes": 2, "rows": int(len(got)), "seconds": summary["seconds"],
                  "images_per_s": summary["images_per_s"], "out": scores}))
EOF
