#!/usr/bin/env bash
# Throughput on a lent GPU machine, one call (~8 min of a 15-minute lease): benchmarks/throughput.py
# --device cuda in three phases, each under its own timeout and each writing its JSON into $OUT
# after every measurement (a phase cut short keeps what it measured):
#   1. index.json:   a generated library of $CLIPS videos (made there, one process per core), the
#                    end-to-end index of this tree (index.precision auto = bf16, and fp32) and of the
#                    baseline commit, GPU utilisation sampled through NVML while each index runs,
#                    then a one-clip-at-a-time profile;
#   2. embed.json:   embedding rates fp32 / bf16 (bare timm Lite0 ceiling, cnn_lstm, C3D at
#                    batch 1 and 32), then decode rates by DataLoader workers;
#   3. compile.json: the same with bf16 + torch.compile (the ceiling the Lite0 path is judged by).
# Prepare here (both ignored by git, carried with the run):
#   .whl/       the wheels gpu_smoke.sh lists (the machine's image has torch, lightning, timm, ...)
#   .baseline/  the baseline commit's files: mkdir .baseline && git archive <ref> src configs | tar -x -C .baseline
# Run (device tool): bash benchmarks/gpu_throughput.sh   with carry=[".whl", ".baseline"]; JSON in $OUT.
set -u
OUT=${OUT:-/tmp/gpu_throughput_out}
CLIPS=${CLIPS:-100} DEVICE=${DEVICE:-cuda} PY=${PY:-python3}   # DEVICE=cpu PY=.venv/bin/python: a dry run here
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
TP=("$PY" benchmarks/throughput.py --device "$DEVICE" --clips "$CLIPS" --work /tmp/tp)
phase() { local name=$1 limit=$2; shift 2; local t=$SECONDS
  timeout "$limit" "${TP[@]}" --out "$OUT/$name.json" "$@" > /dev/null 2> "$OUT/$name.log"
  echo "$name rc=$? $((SECONDS - t)) s"; grep -E "done|Error|error" "$OUT/$name.log" | tail -4; }
phase index 240 --baseline-tree .baseline --index-precisions auto fp32 --skip embed decode
phase embed 110 --precisions fp32 bf16 --skip index profile
phase compile 170 --precisions bf16+compile --skip index profile decode
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(n):
    p = out / f"{n}.json"
    return json.loads(p.read_text()) if p.exists() else {}
ix, rows = load("index"), load("embed").get("embed", []) + load("compile").get("embed", [])
print("gpu", ix.get("gpu"), "torch", ix.get("torch"), "cores", ix.get("cores"), "library_s", ix.get("library_s"))
for k, v in ix.get("index", {}).items():
    print("index", k, v)
print("profile", ix.get("profile", {}).get("line"))
print("decode", load("embed").get("decode"))
for r in rows:
    print("embed", r)
bare = {r["precision"]: r["frames_per_s"] for r in rows if r["model"] == "bare_timm_lite0"}
for r in rows:
    if r["model"] == "cnn_lstm" and r["batch"] > 1 and r["precision"] in bare:
        print(f"cnn_lstm {r['precision']} batch {r['batch']}: {16 * r['clips_per_s']:.0f} frames/s = "
              f"{16 * r['clips_per_s'] / bare[r['precision']]:.0%} of bare timm {r['precision']}")
EOF
