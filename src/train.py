"""Train a clip embedder and evaluate retrieval: `python src/train.py [overrides]`.

Configs live in configs/ (train.yaml is the root); see the README for the map.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from media_retrieval.cli.launch import launch

    launch("train.yaml", "media_retrieval.cli.train:train_for_sweep")
