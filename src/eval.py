"""Evaluate retrieval with a checkpoint: `python src/eval.py ckpt_path=... [overrides]`."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval.yaml")
def main(cfg: DictConfig) -> None:
    from media_retrieval.cli.common import run_cli
    from media_retrieval.cli.eval import evaluate

    run_cli(evaluate, cfg)


if __name__ == "__main__":
    from media_retrieval.cli.precheck import precheck_overrides

    precheck_overrides("eval.yaml")
    main()
