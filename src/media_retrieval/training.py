"""A training run's steps that are not reading a config: the data and model made ready, the
checkpoint to resume from (falling back from a damaged one), ``trainer.fit`` with the ways
a long run ends early turned into one clear line each, and the test of the checkpoint
validation chose."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from media_retrieval.errors import ConfigError, Interrupted, MediaRetrievalError, TrainingDiverged
from media_retrieval.models.cost import model_cost, write_cost
from media_retrieval.models.registry import model_from_config
from media_retrieval.utils.checkpoint import AtomicCheckpointIO, newest_intact
from media_retrieval.utils.files import point_latest
from media_retrieval.utils.hparams import log_hyperparameters
from media_retrieval.utils.instantiate import build, build_callbacks, build_loggers

log = logging.getLogger(__name__)


def train_and_test(cfg: DictConfig) -> tuple[dict[str, float], L.Trainer]:
    """``src/train.py``'s run: data and model made ready, trained where there is something to
    train, then the checkpoint validation chose tested (:func:`test_best`)."""
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
    trainer: L.Trainer = build(
        cfg.trainer,
        callbacks=callbacks,
        logger=build_loggers(cfg) or False,
        plugins=[AtomicCheckpointIO()],
    )
    log_hyperparameters(trainer, cfg)
    started = time.perf_counter()
    if cfg.get("train") and model.has_trainable_embedding:
        fit(trainer, model, datamodule, resume, cfg)
    elif cfg.get("train"):
        log.info("Nothing to train: frozen backbone without recurrence; evaluating directly.")
    train_s = time.perf_counter() - started
    metrics = test_best(trainer, model, datamodule, cfg)
    if cfg.get("measure_cost"):
        record_cost(model, trainer, cfg, train_s)
    return metrics, trainer


def record_cost(
    model: L.LightningModule, trainer: L.Trainer, cfg: DictConfig, train_s: float | None
) -> None:
    """Table III from this run (``measure_cost: true``): the model's size and embedding time,
    and the training time and epochs, in ``retrieval/cost.json`` (rank 0 only)."""
    if not trainer.is_global_zero:
        return
    cost = model_cost(model)
    cost.update(
        train_s=None if train_s is None else round(train_s, 1),
        epochs=trainer.current_epoch if train_s is not None else 0,
        train_clips=len(trainer.datamodule.split.ids("train")),
    )
    path = write_cost(Path(cfg.paths.output_dir) / "retrieval", cost)
    log.info("model cost (Table III) written to %s", path)


def optimized_value(metrics: dict[str, float] | None, name: str) -> float:
    """The metric a sweeper (Optuna) optimises; NaN for a failed or metric-less run, which
    Optuna records as a failed trial and moves on from."""
    if metrics and name not in metrics:
        log.warning(
            "optimized_metric %r was not logged by this run (logged: %s)",
            name,
            ", ".join(sorted(k for k in metrics if "_d" not in k)[:12]),
        )
    return float((metrics or {}).get(name, float("nan")))


def evaluate_model(cfg: DictConfig) -> tuple[dict[str, float], L.Trainer]:
    """``src/eval.py``'s run: a checkpoint's (or a train-free) model tested on the data config's
    pool; with ``save_embeddings``, validation embeddings too (where δ is chosen) and
    ``logs/eval/latest`` pointed at the run (what sweeps/par_delta_k.yaml re-scores)."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = prepare(
        cfg, model_from_config(cfg.model, cfg.get("ckpt_path")), eval_mode=True
    )
    trainer: L.Trainer = build(
        cfg.trainer, callbacks=build_callbacks(cfg), logger=build_loggers(cfg) or False
    )
    if cfg.get("save_embeddings") and datamodule.split.ids("val"):
        trainer.validate(model, datamodule=datamodule, verbose=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    if cfg.get("measure_cost"):
        record_cost(model, trainer, cfg, None)
    if cfg.get("save_embeddings"):
        point_latest(Path(cfg.paths.log_dir) / "eval" / "latest", cfg.paths.output_dir)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}, trainer


def prepare(cfg: DictConfig, model: L.LightningModule | None = None, eval_mode: bool = False):
    """DataModule ready to serve (corpus generated, features cached, split made) + model.

    ``eval_mode``: evaluating a given model, whose training classes decide what is *seen*."""
    datamodule = build(cfg.data)
    model = model if model is not None else build(cfg.model)
    if eval_mode:
        datamodule.eval_mode = True
        datamodule.seen_classes = list(model.hparams.get("train_classes") or [])
    datamodule.use_normalization(
        model.input_normalize
    )  # the encoder's, whatever the data config says
    if not eval_mode or model.clip_spec is None:
        model.clip_spec = (
            datamodule.clip_spec
        )  # saved in its checkpoints: index and search reuse it
    if model.uses_frame_features:
        datamodule.attach_frame_encoder(model.backbone, model.encoder_spec())
    clip_encoder = model.cached_clip_encoder  # a frozen clip-level encoder: cached too
    if clip_encoder is not None and datamodule.cache_dir is not None:
        datamodule.attach_clip_encoder(clip_encoder, clip_encoder.spec())
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, model


def resolve_resume(cfg: DictConfig) -> str | None:
    """``ckpt_path``: ``last`` = this run dir's ``checkpoints/last.ckpt`` (resume an interrupted
    run by giving its folder: ``hydra.run.dir=<run>``), or a path; checked before data is read."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return None
    if OmegaConf.select(cfg, "trainer.fast_dev_run", default=False):
        raise ConfigError(
            f"debug=fdr (fast_dev_run) runs one batch of everything from scratch and cannot resume "
            f"ckpt_path={ckpt}: drop one of the two"
        )
    ckpt_dir = Path(cfg.paths.output_dir) / "checkpoints"
    if str(ckpt) == "last":
        path = ckpt_dir / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last: no {path}; to resume a run, point at its folder: "
                "hydra.run.dir=logs/train/runs/<run> ckpt_path=last (or give the checkpoint's "
                "path)"
            )
        intact = newest_intact(ckpt_dir, path)  # a damaged last.ckpt falls back, with a warning
        if intact is None:
            raise ConfigError(
                f"ckpt_path=last: {path} and every other checkpoint in {ckpt_dir} are damaged "
                "(truncated or not checkpoints); start the run again without ckpt_path"
            )
        return str(intact)
    if not Path(str(ckpt)).is_file():
        raise ConfigError(f"ckpt_path={ckpt!r}: file not found")
    return str(ckpt)


def check_validation(datamodule, callbacks: list[L.Callback], cfg: DictConfig) -> None:
    """Checkpoints are chosen by validation retrieval, which needs at least two validation clips
    (each is a query against the others). The split keeps two where the data allows; where it
    cannot (a folder too small), the run keeps the last epoch's checkpoint and says so, rather than
    refusing a small folder of one's own (or stopping at the end of its first epoch)."""
    chooser = [
        c
        for c in callbacks
        if isinstance(c, ModelCheckpoint) and c.monitor and c.monitor.startswith("val/retrieval")
    ]
    n_val = len(datamodule.split.ids("val"))
    if chooser and n_val < 2 and not cfg.trainer.get("fast_dev_run"):
        log.warning(
            "the validation split has %d clip(s), and choosing a checkpoint by %s needs at least "
            "2: the "
            "last epoch's checkpoint is kept instead (add clips, or raise data.val_fraction, now "
            "%s, to "
            "choose by validation)",
            n_val,
            chooser[0].monitor,
            cfg.data.get("val_fraction"),
        )
        for c in (
            chooser
        ):  # checkpoints/last.ckpt (every epoch) stays; the test runs on the last epoch's weights
            callbacks.remove(c)


def fit(
    trainer: L.Trainer, model: L.LightningModule, datamodule, ckpt: str | None, cfg: DictConfig
) -> None:
    """``trainer.fit`` with the ways a long run ends early turned into one clear line each."""
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except SIGTERMException as exc:
        saved = next((c.saved for c in trainer.callbacks if getattr(c, "saved", None)), None)
        raise Interrupted(
            f"terminated by SIGTERM at epoch {trainer.current_epoch}: "
            + (
                f"checkpoint saved to {saved}; resume with hydra.run.dir={cfg.paths.output_dir} "
                f"ckpt_path={saved}"
                if saved
                else "no checkpoint callback configured"
            )
        ) from exc
    except (FloatingPointError, TrainingDiverged) as exc:
        keep = (
            f"the last good checkpoint is {last}"
            if last.is_file()
            else "no checkpoint was written before it"
        )
        raise TrainingDiverged(
            f"{exc}; {keep} (never overwritten with non-finite weights)"
        ) from exc
    except OSError as exc:  # full disk or quota while writing a checkpoint or log
        keep = (
            f"the last good checkpoint {last} is intact"
            if last.is_file()
            else "no checkpoint was written yet"
        )
        raise MediaRetrievalError(
            f"cannot write to {cfg.paths.output_dir} ({exc.strerror or exc}); {keep}: free "
            f"space and resume with hydra.run.dir={cfg.paths.output_dir} ckpt_path=last"
        ) from exc
    except Exception as exc:
        if ckpt and (
            "Weights only load failed" in str(exc) or "UnpicklingError" in type(exc).__name__
        ):
            raise ConfigError(
                f"ckpt_path={ckpt!r} cannot be loaded safely (it holds more than weights and "
                f"training state, e.g. pickled code): {str(exc).splitlines()[0]}"
            ) from exc
        raise


def test_best(
    trainer: L.Trainer, model: L.LightningModule, datamodule, cfg: DictConfig
) -> dict[str, float]:
    """The run's metrics: with ``test``, those of the checkpoint a validation metric chose (not the
    every-epoch last.ckpt) on the test pool; without (e.g. experiment=ssl), the last validation's.
    The best epoch's validation score is added under its own name: what searches optimise."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    ckpt_cb = next(
        (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
    )
    if cfg.get("test"):
        ckpt = ckpt_cb.best_model_path if ckpt_cb is not None else None
        if ckpt:
            if not Path(
                ckpt
            ).is_file():  # deleted by hand after it was chosen (a resumed run still names it)
                raise MediaRetrievalError(
                    f"the best checkpoint by {ckpt_cb.monitor}, {ckpt}, no longer exists; "
                    f"training is finished and saved: test another with python src/eval.py "
                    f"ckpt_path={Path(ckpt).parent / 'last.ckpt'}"
                )
            log.info("Testing the best checkpoint by %s: %s", ckpt_cb.monitor, ckpt)
            trainer.test(
                model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False
            )
        else:
            trainer.test(model, datamodule=datamodule, verbose=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        metrics[ckpt_cb.monitor] = float(ckpt_cb.best_model_score)
    return metrics
