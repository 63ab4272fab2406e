"""Evaluate retrieval with a checkpoint or a train-free model (``src/eval.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from media_retrieval.cli.common import build, build_callbacks, build_loggers, validate_config
from media_retrieval.cli.train import report, tested_delta
from media_retrieval.config_schema import resolve_delta
from media_retrieval.models.registry import model_from_config
from media_retrieval.training import prepare
from media_retrieval.utils.files import point_latest

log = logging.getLogger(__name__)


def rescore(cfg: DictConfig) -> dict[str, float]:
    """Score saved embeddings for every k and δ: seconds, no model, no media."""
    from media_retrieval.reporting.rescore import rescore_embeddings  # noqa: PLC0415 - reporting.rescore (and what it loads) stays unloaded until used

    r = cfg.retrieval
    choice = resolve_delta(r.par.delta)  # saved embeddings carry no model, so no δ chosen on validation
    delta = choice.value
    if choice.how == "default":
        log.warning("retrieval.par.delta=auto without a model: headline δ = %s (every δ of retrieval.par.deltas "
                    "is scored; best_delta.md lists the best)", delta)
    metrics = rescore_embeddings(cfg.embeddings, Path(cfg.paths.output_dir) / "retrieval", list(r.k), delta,
                                 list(r.par.deltas), r.table_k, bool(r.get("exclude_same_video", False)))
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
    model = model_from_config(cfg.model, cfg.get("ckpt_path"))
    datamodule, model = prepare(cfg, model, eval_mode=True)
    trainer: L.Trainer = build(cfg.trainer, callbacks=build_callbacks(cfg), logger=build_loggers(cfg) or False)
    if cfg.get("save_embeddings") and datamodule.split.ids("val"):
        trainer.validate(model, datamodule=datamodule, verbose=False)  # val_embeddings.npz: where δ is chosen
    trainer.test(model, datamodule=datamodule, verbose=False)
    if cfg.get("save_embeddings"):  # logs/eval/latest: what sweeps/par_delta_k.yaml re-scores, no path to edit
        point_latest(Path(cfg.paths.log_dir) / "eval" / "latest", cfg.paths.output_dir)
    report(cfg, delta=tested_delta(trainer, cfg))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


if __name__ == "__main__":  # python -m media_retrieval.cli.eval: the same as `media-retrieval eval`
    import sys

    from media_retrieval.cli.main import main

    main(["eval", *sys.argv[1:]])
