#!/usr/bin/env bash
# The README's `make demo` table. `make docs` runs `make demo` itself (set-up: its whole output
# kept in logs/demo-output.txt) and shows what a user reads at its end: the retrieval table, as
# printed, with the run folder's time stamp written as <date>_<time>.
set -euo pipefail
mkdir -p logs
make demo > logs/demo-output.txt 2>&1 || { tail -40 logs/demo-output.txt; exit 1; }
# output
sed -n '/top-5 retrieval (EU = Euclidean/,/^run dir:/p' logs/demo-output.txt | sed -E 's#runs/[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2}#runs/<date>_<time>#g'
