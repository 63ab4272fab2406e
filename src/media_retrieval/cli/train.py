"""Train a clip embedder, then evaluate retrieval on the test pool (``src/train.py``)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from media_retrieval.callbacks.retrieval import tested_delta
from media_retrieval.cli.common import run_cli, validate_config
from media_retrieval.config.retrieval import DeltaChoice, resolve_delta
from media_retrieval.reporting.tables import print_results
from media_retrieval.training import optimized_value, train_and_test


def train(cfg: DictConfig) -> dict[str, float]:
    validate_config(cfg)
    metrics, trainer = train_and_test(cfg)
    report(
        cfg,
        with_results=bool(cfg.get("test")),
        delta=tested_delta(trainer, cfg.retrieval.par.delta),
    )
    return metrics


@rank_zero_only
def report(cfg: DictConfig, with_results: bool = True, delta: DeltaChoice | None = None) -> None:
    """Print the retrieval table from the run's results.json (rank 0 only)."""
    if with_results:
        choice = resolve_delta(cfg.retrieval.par.delta) if delta is None else delta
        print_results(
            Path(cfg.paths.output_dir) / "retrieval",
            cfg.retrieval.table_k,
            choice.value,
            title=f"{cfg.model.get('name', 'model')}: top-{cfg.retrieval.table_k} retrieval "
            f"(EU = Euclidean, PAR δ = {choice.value:g}{choice.note})",
        )
    print(f"run dir: {cfg.paths.output_dir}")


def train_for_sweep(cfg: DictConfig) -> float | None:
    """``train`` for ``src/train.py``: returns ``optimized_metric`` for hyper-parameter sweepers
    (Optuna); NaN for a failed or metric-less run, which Optuna records as a failed trial and
    moves on from."""
    metrics = run_cli(train, cfg)
    name = cfg.get("optimized_metric")
    return optimized_value(metrics, name) if name else None
