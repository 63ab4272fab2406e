"""Train a clip embedder, then evaluate retrieval on the test pool (``src/train.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from media_retrieval.cli.common import run_cli, validate_config
from media_retrieval.config.retrieval import DeltaChoice, resolve_delta
from media_retrieval.reporting.tables import print_results
from media_retrieval.training import train_and_test

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    validate_config(cfg)
    metrics, trainer = train_and_test(cfg)
    report(cfg, with_results=bool(cfg.get("test")), delta=tested_delta(trainer, cfg))
    return metrics


def tested_delta(trainer: L.Trainer, cfg: DictConfig) -> DeltaChoice:
    """The δ the test used (``retrieval.par.delta``, or with ``auto`` the model's) and where it
    came from."""
    from media_retrieval.callbacks.retrieval import RetrievalCallback  # noqa: PLC0415 - callbacks.retrieval (and what it loads) stays unloaded until used

    cb = next((c for c in trainer.callbacks if isinstance(c, RetrievalCallback)), None)
    return cb.choice if cb is not None else resolve_delta(cfg.retrieval.par.delta)


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
    if not name:
        return None
    if metrics and name not in metrics:
        log.warning(
            "optimized_metric %r was not logged by this run (logged: %s)",
            name,
            ", ".join(sorted(k for k in metrics if "_d" not in k)[:12]),
        )
    return float((metrics or {}).get(name, float("nan")))
