"""Train a clip embedder, then evaluate retrieval on the test pool (``src/train.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from media_retrieval.cli.common import (
    build,
    build_callbacks,
    build_loggers,
    log_hyperparameters,
    print_results,
    validate_config,
)

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig, model: L.LightningModule | None = None, eval_mode: bool = False):
    """DataModule ready to serve (corpus generated, features cached, split made) + model.

    ``eval_mode``: evaluating a given model, whose training classes decide what is *seen*."""
    datamodule = build(cfg.data)
    model = model if model is not None else build(cfg.model)
    if eval_mode:
        datamodule.eval_mode = True
        datamodule.seen_classes = list(model.hparams.get("train_classes") or [])
    if getattr(model, "uses_frame_features", False):
        datamodule.attach_frame_encoder(model.backbone, model.encoder_spec())
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, model


def train(cfg: DictConfig) -> dict[str, float]:
    validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = prepare(cfg)
    # Re-seed: building the corpus or feature cache consumes random numbers, and the
    # classifier and training must not depend on whether the cache already existed.
    L.seed_everything(cfg.seed, workers=True)
    model.set_classes(datamodule.split.train_classes)

    callbacks = build_callbacks(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg) or False)
    log_hyperparameters(trainer, cfg)

    if cfg.get("train") and model.has_trainable_embedding:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    elif cfg.get("train"):
        log.info("Nothing to train: frozen backbone without recurrence; evaluating directly.")

    metrics: dict[str, float] = {}
    if cfg.get("test"):
        ckpt = None
        ckpt_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if ckpt_cb is not None and ckpt_cb.best_model_path:
            ckpt = ckpt_cb.best_model_path
            log.info("Testing the best checkpoint by %s: %s", ckpt_cb.monitor, ckpt)
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False) if ckpt else \
            trainer.test(model, datamodule=datamodule, verbose=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if ckpt_cb is not None and ckpt_cb.monitor and ckpt_cb.best_model_score is not None:
        metrics[ckpt_cb.monitor] = float(ckpt_cb.best_model_score)  # the best epoch's, what searches optimise
    report(cfg, with_results=bool(cfg.get("test")))
    return metrics


@rank_zero_only
def report(cfg: DictConfig, with_results: bool = True) -> None:
    """Print the retrieval table from the run's results.json (rank 0 only)."""
    if with_results:
        print_results(Path(cfg.paths.output_dir) / "retrieval", cfg.retrieval.table_k, cfg.retrieval.par.delta,
                      title=f"{cfg.model.get('name', 'model')}: top-{cfg.retrieval.table_k} retrieval "
                            f"(EU = Euclidean, PAR δ = {cfg.retrieval.par.delta})")
    print(f"run dir: {cfg.paths.output_dir}")
