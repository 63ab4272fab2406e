"""``src/index.py``: read the config, call :func:`media_retrieval.retrieval.indexer.build_index`,
print the summary. What building means lives in ``retrieval/indexer.py``."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from media_retrieval.cli.common import build, validate_config
from media_retrieval.clips import ClipSpec
from media_retrieval.errors import ConfigError
from media_retrieval.models.registry import load_model
from media_retrieval.retrieval.indexer import IndexOptions, build_index

SPEC_KEYS = ("frames", "image_size", "resize", "in_chans", "sampling")


def model_from_cfg(cfg: DictConfig) -> L.LightningModule:
    """The checkpoint's model (its recorded class wins over ``model=``), or a model with
    nothing to train."""
    if cfg.get("ckpt_path"):
        return load_model(cfg.ckpt_path, cls=get_class(cfg.model._target_))
    model = build(cfg.model)
    if model.has_trainable_embedding:
        raise ConfigError("ckpt_path is required: this model's embedding must be trained first "
                          "(only a frozen backbone with model.temporal.cell=none embeds without a checkpoint)")
    return model


def clip_spec_from_cfg(cfg: DictConfig, model: L.LightningModule) -> ClipSpec:
    """The model's own clip spec, with the ``preprocess.*`` values given (warned about when they
    change what the model was trained on); ``chunk_s`` and ``decoder`` are indexing choices."""
    p = cfg.preprocess
    given = {k: p.get(k) for k in SPEC_KEYS if p.get(k) is not None}
    return model.input_spec.with_overrides(warn=model.clip_spec is not None, **given,
                                           chunk_s=p.get("chunk_s"), decoder=p.get("decoder") or "seek")


def index_options(cfg: DictConfig) -> IndexOptions:
    ix = cfg.index
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer.pop("_target_", None)
    return IndexOptions(backend=ix.backend, backend_options=OmegaConf.to_container(ix.options, resolve=True),
                        pca_variance=ix.pca.variance if ix.pca.enabled else None,
                        pca_dim=ix.pca.dim if ix.pca.enabled else None, rebuild=bool(ix.get("rebuild")),
                        lock_wait_s=float(ix.get("lock_wait_s") or 0), batch_size=int(cfg.batch_size),
                        num_workers=int(cfg.num_workers), seed=int(cfg.seed), trainer=trainer)


def run_index(cfg: DictConfig) -> dict:
    validate_config(cfg)
    if not cfg.get("media_dir") or not cfg.get("index_dir"):
        raise ConfigError("media_dir=... and index_dir=... are required (the folder to index and where the index goes)")
    options = index_options(cfg)
    options.check()  # before a model is loaded
    model = model_from_cfg(cfg)
    stats = build_index(cfg.media_dir, cfg.index_dir, model, clip_spec_from_cfg(cfg, model), options,
                        ckpt_path=cfg.get("ckpt_path"))
    if stats:
        gen = Path(stats["index_dir"]) / stats["generation"]
        print(f"index: {stats['index_dir']} ({stats['generation']}): {stats['segments']} segments from "
              f"{stats['files']} files; embedded {stats['embedded']}, reused {stats['reused']}, removed "
              f"{stats['removed']} deleted files, skipped {stats['skipped']} ({stats['seconds']} s)")
        if os.environ.get("MEDIA_RETRIEVAL_QUIET") is None and stats["skipped"]:
            print(f"skipped files are listed in {gen / 'metadata.sqlite'} (table skipped)")
    return stats
