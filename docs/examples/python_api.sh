#!/usr/bin/env bash
# The README's "Use it from Python" example: `make docs` runs it after make demo (whose model it
# loads) and search_own_media.sh (whose library it indexes) and rewrites the code and its output
# in the README; a test runs it on a few clips with a small trained model.
#
# Set-up, not shown: a library and a trained model must be there.
set -euo pipefail
test -d data/my_media || { echo "run docs/examples/search_own_media.sh first (it makes data/my_media)" >&2; exit 1; }
ls logs/train/runs/*/checkpoints/epoch_*.ckpt > /dev/null || { echo "run make demo first (it trains the model)" >&2; exit 1; }
rm -rf data/api_index
# code
docs/examples/python_api.py
# output
python docs/examples/python_api.py
