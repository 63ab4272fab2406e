#!/usr/bin/env bash
# Throughput on a lent GPU machine, one call (< 10 min): benchmarks/throughput.py --device cuda
# with torch.compile, decode workers and end-to-end indexing of a generated library, beside the
# baseline commit. Prepare here (both ignored by git, carried with the run):
#   .whl/       the wheels gpu_smoke.sh lists (the machine's image has torch, lightning, timm, ...)
#   .baseline/  the baseline commit's files: mkdir .baseline && git archive <ref> | tar -x -C .baseline
# Run (device tool): bash benchmarks/gpu_throughput.sh   with carry=[".whl", ".baseline"]; JSON in $OUT.
set -u
OUT=${OUT:-/tmp/gpu_throughput_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 540 python3 benchmarks/throughput.py --device cuda --clips 200 --compile --work /tmp/tp \
  --baseline-tree .baseline > "$OUT/throughput.json" 2> "$OUT/throughput.log"
echo "rc=$?"; tail -c 3000 "$OUT/throughput.json"
nvidia-smi --query-gpu=utilization.gpu --format=csv
