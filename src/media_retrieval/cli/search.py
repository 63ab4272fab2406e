"""``src/search.py``: read the config, open a
:class:`~media_retrieval.retrieval.media_index.MediaIndex`,
search each query, print a table, JSON or a contact sheet."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig

from media_retrieval.cli.common import validate_config
from media_retrieval.errors import ConfigError
from media_retrieval.models.registry import load_model
from media_retrieval.retrieval.media_index import MediaIndex


def search(cfg: DictConfig) -> list[dict]:
    validate_config(cfg)
    if not cfg.get("index_dir") or not cfg.get("query"):
        raise ConfigError(
            "index_dir=... and query=... (a video, an image or a folder of them) are required"
        )
    if cfg.output not in ("table", "json"):
        raise ConfigError(f"output={cfg.output!r}; valid: table, json")
    index = MediaIndex.open_configured(cfg)
    if cfg.get("ckpt_path"):
        index.require_model(
            load_model(cfg.ckpt_path, cls=get_class(cfg.model._target_)), cfg.ckpt_path
        )
    delta, ranking = index.delta_choice(cfg.retrieval.par.delta).value, cfg.get("ranking", "par")
    found, errors = index.search_files(cfg.query, int(cfg.k), delta, cfg.group_by, ranking)
    results = [{"query": q, "error": e, "results": []} for q, e in errors.items()]
    from media_retrieval.reporting.search_output import contact_sheet, print_hits  # noqa: PLC0415 - reporting.search_output (and what it loads) stays unloaded until used

    for q, hits in found:
        results.append({"query": q, "results": [h.as_dict() for h in hits]})
        if cfg.output == "table":
            print_hits(q, hits, delta, ranking)
    if cfg.output == "json":
        json.dump(results, sys.stdout, indent=1)
        print()
    elif errors:
        print(
            f"{len(errors)} of {len(errors) + len(found)} queries could not be read (see the log): "
            f"{', '.join(errors)}"
        )
    if cfg.get("sheet"):
        p = contact_sheet(found, Path(cfg.sheet))
        print(f"contact sheet: {p}", file=sys.stderr if cfg.output == "json" else sys.stdout)
    return results
