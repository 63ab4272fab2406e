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
    # Returned for hyper-parameter sweepers (Optuna): the value they optimise. NaN for a failed
    # or metric-less run, which Optuna records as a failed trial and moves on from.
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if metrics and name not in metrics:
        import logging

        logging.getLogger(__name__).warning("optimized_metric %r was not logged by this run (logged: %s)",
                                            name, ", ".join(sorted(k for k in metrics if "_d" not in k)[:12]))
    return float((metrics or {}).get(name, float("nan")))


if __name__ == "__main__":
    from media_retrieval.cli.precheck import precheck_overrides

    precheck_overrides("train.yaml")
    main()
