"""Index a folder of videos and images for search: `python src/index.py ckpt_path=... media_dir=...
index_dir=...`.

See configs/index.yaml for the options and docs/search.md for the index format.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from media_retrieval.cli.launch import launch

    launch("index.yaml", "media_retrieval.cli.index:run_index")
