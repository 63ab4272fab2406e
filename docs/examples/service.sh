#!/usr/bin/env bash
# The README's service example: `make docs` runs it after search_own_media.sh (whose index it
# serves) and rewrites its commands and output in the README; a test runs both on a few clips.
#
# Set-up, not shown: the service on the search example's index, in the background.
set -euo pipefail
test -d data/my_index || { echo "run docs/examples/search_own_media.sh first (it builds data/my_index)" >&2; exit 1; }
nohup python -m media_retrieval serve index_dir=data/my_index port=8000 log_level=warning > data/serve.log 2>&1 &
echo $! > data/serve.pid
for _ in $(seq 120); do curl -sf http://127.0.0.1:8000/health > /dev/null && exit 0; sleep 0.5; done
echo "the service did not start: $(tail -3 data/serve.log)" >&2; exit 1
# show
curl -s http://127.0.0.1:8000/health
# show
curl -s -F file=@data/queries/bench_press_still.jpg "http://127.0.0.1:8000/search?k=2" | python -m json.tool
# finally
pid=$(cat data/serve.pid); kill "$pid"; for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done; kill -9 "$pid"
