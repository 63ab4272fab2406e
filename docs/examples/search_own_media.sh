#!/usr/bin/env bash
# The README's "Search your own media" example. `make docs` runs it from the repository root and
# rewrites its commands and their output in the README (docs/examples/render.py); a test runs it
# on a few clips (EXAMPLE_CLIPS=few) and checks what the README says about it.
#
# Set-up, not shown: a library of real clips (../shared/data/real-clips: gestures-mini and
# ucf101-mini), with three held-out queries: two clips and a still frame of a held-out clip.
set -euo pipefail
REAL=${MEDIA_RETRIEVAL_REAL_CLIPS:-../shared/data/real-clips}
rm -rf data/my_media data/my_index data/queries data/query_classes.txt
mkdir -p data/my_media data/queries
cp -r "$REAL/gestures-mini" "$REAL/ucf101-mini" data/my_media/
if [ "${EXAMPLE_CLIPS:-all}" = few ]; then  # the test's library: 3 clips per class
  for d in data/my_media/*/*/; do ls "$d" | sort | tail -n +4 | sed "s|^|$d|" | xargs -r rm; done
fi
for q in gestures-mini/one_arm_raise ucf101-mini/Diving; do
  clip=$(ls data/my_media/$q/* | tail -1)
  mv "$clip" data/queries/ && echo "$(basename "$clip") ${q#*/}" >> data/query_classes.txt
done
echo "bench_press_still.jpg BenchPress" >> data/query_classes.txt
python - <<'PY'
import glob
import av
clip = sorted(glob.glob("data/my_media/ucf101-mini/BenchPress/*"))[-1]
with av.open(clip) as box:
    frames = [f.to_image() for f in box.decode(video=0)]
frames[len(frames) // 2].convert("RGB").save("data/queries/bench_press_still.jpg", quality=95)
import os
os.remove(clip)  # the still's own clip is not in the library
PY
# show
python src/index.py model.temporal.cell=none model.temporal.stats=[mean] media_dir=data/my_media index_dir=data/my_index
# show
python src/search.py index_dir=data/my_index query=data/queries k=5 sheet=docs/images/search_contact_sheet.png
# say
python docs/examples/par_summary.py data/my_index data/queries data/query_classes.txt 5
