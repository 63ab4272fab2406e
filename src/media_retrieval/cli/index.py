"""``src/index.py``: read the config, call :func:`media_retrieval.retrieval.indexer.build_index`,
print the summary. What building means lives in ``retrieval/indexer.py``."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from media_retrieval.cli.common import validate_config
from media_retrieval.errors import ConfigError
from media_retrieval.models.registry import model_from_config
from media_retrieval.retrieval.indexer import IndexOptions, build_index


def run_index(cfg: DictConfig) -> dict:
    validate_config(cfg)
    if not cfg.get("media_dir") or not cfg.get("index_dir"):
        raise ConfigError(
            "media_dir=... and index_dir=... are required (the folder to index and where the index "
            "goes)"
        )
    options = IndexOptions.from_config(cfg)
    options.check()  # before a model is loaded
    model = model_from_config(cfg.model, cfg.get("ckpt_path"))
    spec = model.input_spec.with_node(cfg.clip, warn=model.clip_spec is not None)
    stats = build_index(
        cfg.media_dir, cfg.index_dir, model, spec, options, ckpt_path=cfg.get("ckpt_path")
    )
    if stats:
        gen = Path(stats["index_dir"]) / stats["generation"]
        print(
            f"index: {stats['index_dir']} ({stats['generation']}): {stats['segments']} segments "
            "from "
            f"{stats['files']} files; embedded {stats['embedded']}, reused {stats['reused']}, "
            "removed "
            f"{stats['removed']} deleted files, skipped {stats['skipped']} ({stats['seconds']} s)"
        )
        if os.environ.get("MEDIA_RETRIEVAL_QUIET") is None and stats["skipped"]:
            print(f"skipped files are listed in {gen / 'metadata.sqlite'} (table skipped)")
    return stats
