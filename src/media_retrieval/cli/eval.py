"""Evaluate retrieval with a checkpoint or a train-free model (``src/eval.py``)."""

from __future__ import annotations

import logging

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from media_retrieval.cli.common import build, build_callbacks, build_loggers, validate_config
from media_retrieval.cli.train import prepare, report
from media_retrieval.errors import ConfigError
from media_retrieval.utils.checkpoint import load_model

log = logging.getLogger(__name__)


def rescore(cfg: DictConfig) -> dict[str, float]:
    """Score saved embeddings for every k and δ: seconds, no model, no media."""
    from pathlib import Path

    from media_retrieval.callbacks.retrieval import logged_metrics
    from media_retrieval.reporting.tables import best_delta_table, write_json, write_markdown
    from media_retrieval.retrieval.embeddings_io import load_embeddings
    from media_retrieval.retrieval.evaluate import score_rows

    emb, _, datasets, model = load_embeddings(cfg.embeddings)
    r = cfg.retrieval
    rows = score_rows(emb, list(r.k), r.par.delta, list(r.par.deltas), model=model, datasets=datasets,
                      exclude_same_group=bool(r.get("exclude_same_video", False)))
    out = Path(cfg.paths.output_dir) / "retrieval"
    write_json(rows, out / "results.json")
    write_markdown(rows, out / "results.md", r.table_k, r.par.delta)
    best = best_delta_table(rows)
    (out / "best_delta.md").write_text(best)
    print(best)
    metrics = logged_metrics(rows, r.par.delta)
    # k-free aliases of the table_k values (".../precision@k"): a sweep over k needs one name
    at = f"@{r.table_k}"
    metrics.update({name.replace(at, "@k"): v for name, v in list(metrics.items())
                    if name.endswith(at) and "_d" not in name})
    for lg in build_loggers(cfg):  # W&B sweeps read the metric from here
        lg.log_hyperparams({"retrieval": OmegaConf.to_container(r, resolve=True), "embeddings": str(cfg.embeddings)})
        lg.log_metrics(metrics)
        lg.finalize("success")
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    validate_config(cfg)
    if cfg.get("embeddings"):
        metrics = rescore(cfg)
        report(cfg)
        return metrics
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("ckpt_path"):
        model = load_model(get_class(cfg.model._target_), cfg.ckpt_path)
    else:
        model = build(cfg.model)
        if model.has_trainable_embedding:
            raise ConfigError(
                "ckpt_path is required: this model's embedding must be trained first "
                "(only a frozen backbone with model.temporal.cell=none evaluates without a checkpoint)"
            )
    datamodule, model = prepare(cfg, model, eval_mode=True)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=build_loggers(cfg) or False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    report(cfg)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
