"""Train a clip embedder, then evaluate retrieval on the test pool (``src/train.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from media_retrieval.cli.common import (
    build,
    build_callbacks,
    build_loggers,
    run_cli,
    validate_config,
)
from media_retrieval.config_schema import DeltaChoice, resolve_delta
from media_retrieval.errors import MediaRetrievalError
from media_retrieval.reporting.tables import print_results
from media_retrieval.training import check_validation, fit, prepare, resolve_resume
from media_retrieval.utils.checkpoint import AtomicCheckpointIO
from media_retrieval.utils.hparams import log_hyperparameters

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    validate_config(cfg)
    resume = resolve_resume(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = prepare(cfg)
    # Re-seed: building the corpus or feature cache consumes random numbers, and the
    # classifier and training must not depend on whether the cache already existed.
    L.seed_everything(cfg.seed, workers=True)
    model.set_classes(datamodule.split.train_classes)

    callbacks = build_callbacks(cfg)
    if cfg.get("train") and model.has_trainable_embedding:
        check_validation(datamodule, callbacks, cfg)
    trainer: L.Trainer = build(cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg) or False,
                               plugins=[AtomicCheckpointIO()])
    log_hyperparameters(trainer, cfg)

    if cfg.get("train") and model.has_trainable_embedding:
        fit(trainer, model, datamodule, resume, cfg)
    elif cfg.get("train"):
        log.info("Nothing to train: frozen backbone without recurrence; evaluating directly.")

    # without a test (test=false, e.g. experiment=ssl): the last validation's metrics
    metrics: dict[str, float] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    # the checkpoint chosen by a validation metric (not the every-epoch last.ckpt one)
    ckpt_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    if cfg.get("test"):
        ckpt = None
        if ckpt_cb is not None and ckpt_cb.best_model_path:
            ckpt = ckpt_cb.best_model_path
            if not Path(ckpt).is_file():  # deleted by hand after it was chosen (a resumed run still names it)
                raise MediaRetrievalError(f"the best checkpoint by {ckpt_cb.monitor}, {ckpt}, no longer exists; training "
                                          f"is finished and saved: test another with python src/eval.py "
                                          f"ckpt_path={Path(ckpt).parent / 'last.ckpt'}")
            log.info("Testing the best checkpoint by %s: %s", ckpt_cb.monitor, ckpt)
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False) if ckpt else \
            trainer.test(model, datamodule=datamodule, verbose=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        metrics[ckpt_cb.monitor] = float(ckpt_cb.best_model_score)  # the best epoch's, what searches optimise
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
        print_results(Path(cfg.paths.output_dir) / "retrieval", cfg.retrieval.table_k, choice.value,
                      title=f"{cfg.model.get('name', 'model')}: top-{cfg.retrieval.table_k} retrieval "
                            f"(EU = Euclidean, PAR δ = {choice.value:g}{choice.note})")
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
        log.warning("optimized_metric %r was not logged by this run (logged: %s)",
                    name, ", ".join(sorted(k for k in metrics if "_d" not in k)[:12]))
    return float((metrics or {}).get(name, float("nan")))


if __name__ == "__main__":  # python -m media_retrieval.cli.train: the same as `media-retrieval train`
    import sys

    from media_retrieval.cli.main import main

    main(["train", *sys.argv[1:]])
