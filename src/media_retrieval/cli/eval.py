"""Evaluate retrieval with a checkpoint or a train-free model (``src/eval.py``)."""

from __future__ import annotations

import logging

import lightning as L
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from media_retrieval.cli.common import build, build_callbacks, build_loggers, validate_config
from media_retrieval.cli.train import prepare, report
from media_retrieval.errors import ConfigError
from media_retrieval.models.registry import load_model

log = logging.getLogger(__name__)


def rescore(cfg: DictConfig) -> dict[str, float]:
    """Score saved embeddings for every k and δ: seconds, no model, no media."""
    from pathlib import Path

    from media_retrieval.callbacks.retrieval import logged_metrics
    from media_retrieval.reporting.tables import best_delta_table, write_json, write_markdown
    from media_retrieval.retrieval.embeddings_io import embeddings_role, load_embeddings
    from media_retrieval.retrieval.evaluate import score_rows

    r = cfg.retrieval

    def scored(path) -> list[dict]:
        emb, _, datasets, model = load_embeddings(path)
        return score_rows(emb, list(r.k), r.par.delta, list(r.par.deltas), model=model, datasets=datasets,
                          exclude_same_group=bool(r.get("exclude_same_video", False)))

    rows = scored(cfg.embeddings)
    out = Path(cfg.paths.output_dir) / "retrieval"
    write_json(rows, out / "results.json")
    write_markdown(rows, out / "results.md", r.table_k, r.par.delta)
    # δ is chosen on validation embeddings only: these, or the val_embeddings.npz saved beside test ones
    if embeddings_role(cfg.embeddings) == "val":
        best = best_delta_table(rows)
    else:
        val = Path(cfg.embeddings).with_name("val_embeddings.npz")
        best = best_delta_table(scored(val) if val.is_file() else None, rows)
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
        model = load_model(cfg.ckpt_path, cls=get_class(cfg.model._target_))
    else:
        model = build(cfg.model)
        if model.has_trainable_embedding:
            raise ConfigError(
                "ckpt_path is required: this model's embedding must be trained first "
                "(only a frozen backbone with model.temporal.cell=none evaluates without a checkpoint)"
            )
    datamodule, model = prepare(cfg, model, eval_mode=True)
    trainer: L.Trainer = build(cfg.trainer, callbacks=build_callbacks(cfg), logger=build_loggers(cfg) or False)
    if cfg.get("save_embeddings") and datamodule.split.ids("val"):
        trainer.validate(model, datamodule=datamodule, verbose=False)  # val_embeddings.npz: where δ is chosen
    trainer.test(model, datamodule=datamodule, verbose=False)
    report(cfg)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
