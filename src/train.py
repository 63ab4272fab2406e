"""Train a clip embedder and evaluate retrieval: `python src/train.py [overrides]`.

Configs live in configs/ (train.yaml is the root); see the README for the map.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    from media_retrieval.cli.common import run_cli
    from media_retrieval.cli.train import train

    metrics = run_cli(train, cfg)
    # Returned for hyper-parameter sweepers (Optuna): the value they optimise.
    name = cfg.get("optimized_metric")
    return metrics.get(name) if metrics and name else None


if __name__ == "__main__":
    main()
