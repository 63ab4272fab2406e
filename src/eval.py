"""Evaluate retrieval with a checkpoint: `python src/eval.py ckpt_path=... [overrides]`."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from media_retrieval.cli.launch import launch

    launch("eval.yaml", "media_retrieval.cli.eval:evaluate")
