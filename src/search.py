"""Search an index by video or image: `python src/search.py index_dir=... query=clip.mp4 k=10`.

See configs/search.yaml for the options and docs/search.md for examples.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from media_retrieval.cli.launch import launch

    launch("search.yaml", "media_retrieval.cli.search:search")
