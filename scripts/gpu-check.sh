#!/usr/bin/env bash
# The one GPU check (issue 14): the benchmarks that need a GPU, in at most ~8 minutes on one card.
#
#   here, once per session:  scripts/gpu-wheels.sh     # wheels the GPU image lacks, into .whl/ (git-ignored)
#   on the lent GPU:         run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=540)
#
# Writes results/gpu/<UTC date>.jsonl (and a copy under $OUT when the device tool sets it): one line describing
# the machine (nvidia-smi name and driver, torch and CUDA versions), then one JSON line per benchmark, or a line
# with "error" for one that failed or ran out of its time. Commit that file and put its numbers in the README.
# GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 runs the same steps at toy sizes on a CPU (to check this script).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
SMOKE=${GPU_CHECK_SMOKE:-0}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || { echo "wheel install failed" >&2; exit 1; }
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 RAY_DATA_DISABLE_PROGRESS_BARS=1
mkdir -p results/gpu
suffix=""; [ "$SMOKE" = 1 ] && suffix=-smoke-$DEVICE
out=results/gpu/$(date -u +%Y-%m-%d)$suffix.jsonl
: > "$out"

"$PY" - >> "$out" <<'PYEOF'
import json, subprocess, torch
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True) if torch.cuda.is_available() else None
print(json.dumps({"bench": "machine", "nvidia_smi": smi.stdout.strip() if smi else None,
                  "torch": torch.__version__, "cuda": torch.version.cuda,
                  "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}))
PYEOF

BUDGET_S=${GPU_CHECK_BUDGET_S:-470}  # the whole check stays under 8 minutes: later benchmarks get what is left
bench() {  # bench SECONDS ARGS...: one benchmark under its own time limit; its JSON lines, or an error line
  local limit=$1; shift
  local left=$(( BUDGET_S - SECONDS ))
  if (( left < 20 )); then
    "$PY" -c 'import json, sys; print(json.dumps({"bench": sys.argv[1], "args": sys.argv[2], "error": "skipped: the check ran out of its time budget"}))' "$1" "$*" >> "$out"
    return
  fi
  (( limit > left )) && limit=$left
  local log; log=$(mktemp)
  if timeout "$limit" "$PY" -m dal_dist bench "$@" > "$log" 2> "$log.err"; then
    grep '^{' "$log" >> "$out"
  else
    local rc=$?
    "$PY" -c 'import json, sys; print(json.dumps({"bench": sys.argv[1], "args": sys.argv[2], "error": f"exit {sys.argv[3]}" + (" (timed out)" if sys.argv[3] == "124" else ""), "stderr": open(sys.argv[4]).read()[-600:]}))' \
      "$1" "$*" "$rc" "$log.err" >> "$out"
  fi
  rm -f "$log" "$log.err"
}

if [ "$SMOKE" = 1 ]; then
  N_SMALL=256; N_BIG=32; N_JPEG_CPU=32; BIG_SIZE=64; KC_N=20000; KC_BIG=50000; PICKS=20
else
  N_SMALL=65536; N_BIG=4096; N_JPEG_CPU=1024; BIG_SIZE=224; KC_N=1000000; KC_BIG=10000000; PICKS=200
fi
# Scoring in-process: forward vs BALD (T = 20) at the model's default precision on the device (bf16 on CUDA).
# The Ray pipeline is not run there: Ray's wheel is larger than what one device call may carry (64 MiB).
bench 150 scoring --device "$DEVICE" --model resnet18-small --image-size 32 --mc-samples 20 --n "$N_SMALL" \
  --batch-size 1024 --repeats 3 --no-pipeline
bench 150 scoring --device "$DEVICE" --model resnet50 --image-size "$BIG_SIZE" --mc-samples 20 --n "$N_BIG" \
  --batch-size 256 --repeats 3 --no-pipeline
# End to end from a JPEG Parquet pool (synthesized photos around 1.15x the size): nvJPEG on the card vs Pillow.
bench 120 scoring --device "$DEVICE" --model resnet50 --image-size "$BIG_SIZE" --mc-samples 20 --n "$N_BIG" \
  --batch-size 256 --repeats 2 --no-pipeline --source jpeg --decode device
bench 90 scoring --device "$DEVICE" --model resnet50 --image-size "$BIG_SIZE" --mc-samples 20 --n "$N_JPEG_CPU" \
  --batch-size 256 --repeats 1 --no-pipeline --source jpeg --decode cpu
# k-center: s/pick and init against the device's memory-bandwidth bound.
bench 120 kcenter --device "$DEVICE" --n "$KC_N" --dim 128 --labeled 1000 --k "$PICKS" --ref-picks 0
bench 150 kcenter --device "$DEVICE" --n "$KC_BIG" --dim 128 --dtype float16 --labeled 1000 --k "$PICKS" --ref-picks 0
# What the decode/copy overlap buys: the nvJPEG run again with the model waiting for each batch's decode (last:
# the first thing the time budget drops).
bench 90 scoring --device "$DEVICE" --model resnet50 --image-size "$BIG_SIZE" --mc-samples 20 --n "$N_BIG" \
  --batch-size 256 --repeats 2 --no-pipeline --source jpeg --decode device --overlap off

[ -n "${OUT:-}" ] && cp "$out" "$OUT/"
cat "$out"
