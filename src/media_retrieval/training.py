"""A training run's steps that are not reading a config: the data and model made ready, the
checkpoint to resume from (falling back from a damaged one), and ``trainer.fit`` with the ways
a long run ends early turned into one clear line each."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from media_retrieval.errors import ConfigError, Interrupted, MediaRetrievalError, TrainingDiverged
from media_retrieval.utils.checkpoint import newest_intact
from media_retrieval.utils.instantiate import build

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig, model: L.LightningModule | None = None, eval_mode: bool = False):
    """DataModule ready to serve (corpus generated, features cached, split made) + model.

    ``eval_mode``: evaluating a given model, whose training classes decide what is *seen*."""
    datamodule = build(cfg.data)
    model = model if model is not None else build(cfg.model)
    if eval_mode:
        datamodule.eval_mode = True
        datamodule.seen_classes = list(model.hparams.get("train_classes") or [])
    datamodule.use_normalization(model.input_normalize)  # the encoder's, whatever the data config says
    if not eval_mode or model.clip_spec is None:
        model.clip_spec = datamodule.clip_spec  # saved in its checkpoints: index and search reuse it
    if getattr(model, "uses_frame_features", False):
        datamodule.attach_frame_encoder(model.backbone, model.encoder_spec())
        if getattr(model, "video", None) is not None:  # its clip-level part: cached too
            datamodule.attach_clip_encoder(model.video.encoder, model.video.encoder.spec())
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
        raise ConfigError(f"debug=fdr (fast_dev_run) runs one batch of everything from scratch and cannot resume "
                          f"ckpt_path={ckpt}: drop one of the two")
    ckpt_dir = Path(cfg.paths.output_dir) / "checkpoints"
    if str(ckpt) == "last":
        path = ckpt_dir / "last.ckpt"
        if not path.is_file():
            raise ConfigError(f"ckpt_path=last: no {path}; to resume a run, point at its folder: "
                              f"hydra.run.dir=logs/train/runs/<run> ckpt_path=last (or give the checkpoint's path)")
        intact = newest_intact(ckpt_dir, path)  # a damaged last.ckpt falls back, with a warning
        if intact is None:
            raise ConfigError(f"ckpt_path=last: {path} and every other checkpoint in {ckpt_dir} are damaged "
                              "(truncated or not checkpoints); start the run again without ckpt_path")
        return str(intact)
    if not Path(str(ckpt)).is_file():
        raise ConfigError(f"ckpt_path={ckpt!r}: file not found")
    return str(ckpt)


def check_validation(datamodule, callbacks: list[L.Callback], cfg: DictConfig) -> None:
    """Checkpoints are chosen by validation retrieval, which needs at least two validation clips
    (each is a query against the others). The split keeps two where the data allows; where it
    cannot (a folder too small), the run keeps the last epoch's checkpoint and says so, rather than
    refusing a small folder of one's own (or stopping at the end of its first epoch)."""
    chooser = [c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor
               and c.monitor.startswith("val/retrieval")]
    n_val = len(datamodule.split.ids("val"))
    if chooser and n_val < 2 and not cfg.trainer.get("fast_dev_run"):
        log.warning("the validation split has %d clip(s), and choosing a checkpoint by %s needs at least 2: the "
                    "last epoch's checkpoint is kept instead (add clips, or raise data.val_fraction, now %s, to "
                    "choose by validation)", n_val, chooser[0].monitor, cfg.data.get("val_fraction"))
        for c in chooser:  # checkpoints/last.ckpt (every epoch) stays; the test runs on the last epoch's weights
            callbacks.remove(c)


def fit(trainer: L.Trainer, model: L.LightningModule, datamodule, ckpt: str | None, cfg: DictConfig) -> None:
    """``trainer.fit`` with the ways a long run ends early turned into one clear line each."""
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except SIGTERMException as exc:
        saved = next((c.saved for c in trainer.callbacks if getattr(c, "saved", None)), None)
        raise Interrupted(f"terminated by SIGTERM at epoch {trainer.current_epoch}: "
                          + (f"checkpoint saved to {saved}; resume with hydra.run.dir={cfg.paths.output_dir} "
                             f"ckpt_path={saved}" if saved else "no checkpoint callback configured")) from exc
    except (FloatingPointError, TrainingDiverged) as exc:
        keep = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written before it"
        raise TrainingDiverged(f"{exc}; {keep} (never overwritten with non-finite weights)") from exc
    except OSError as exc:  # full disk or quota while writing a checkpoint or log
        keep = f"the last good checkpoint {last} is intact" if last.is_file() else "no checkpoint was written yet"
        raise MediaRetrievalError(f"cannot write to {cfg.paths.output_dir} ({exc.strerror or exc}); {keep}: free "
                                  f"space and resume with hydra.run.dir={cfg.paths.output_dir} ckpt_path=last") from exc
    except Exception as exc:
        if ckpt and ("Weights only load failed" in str(exc) or "UnpicklingError" in type(exc).__name__):
            raise ConfigError(f"ckpt_path={ckpt!r} cannot be loaded safely (it holds more than weights and "
                              f"training state, e.g. pickled code): {str(exc).splitlines()[0]}") from exc
        raise
