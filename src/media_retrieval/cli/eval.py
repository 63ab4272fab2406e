"""Evaluate retrieval with a checkpoint or a train-free model (``src/eval.py``)."""

from __future__ import annotations

from omegaconf import DictConfig

from media_retrieval.callbacks.retrieval import tested_delta
from media_retrieval.cli.common import validate_config
from media_retrieval.cli.train import report
from media_retrieval.reporting.rescore import rescore_run
from media_retrieval.training import evaluate_model


def evaluate(cfg: DictConfig) -> dict[str, float]:
    validate_config(cfg)
    if cfg.get("embeddings"):
        metrics = rescore_run(cfg)
        report(cfg)
        return metrics
    metrics, trainer = evaluate_model(cfg)
    report(cfg, delta=tested_delta(trainer, cfg.retrieval.par.delta))
    return metrics
