"""``src/search.py``: read the config, open a :class:`~media_retrieval.retrieval.media_index.MediaIndex`,
search each query, print a table, JSON or a contact sheet."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from media_retrieval.cli.common import validate_config
from media_retrieval.data.library import query_paths
from media_retrieval.errors import ConfigError, DataError
from media_retrieval.models.registry import load_model
from media_retrieval.retrieval.media_index import MediaIndex


def check_model(index: MediaIndex, ckpt_path: str, model_target: str) -> None:
    """Refuse a checkpoint other than the one the index was built with."""
    if not index.built_by(load_model(ckpt_path, cls=get_class(model_target))):
        raise ConfigError(f"ckpt_path={ckpt_path!r} is not the model this index was built with "
                          f"({index.manifest.get('ckpt_path') or index.manifest.get('model_name')}): its embeddings "
                          "are not comparable; search without ckpt_path (the index carries its model) or re-index")


def search(cfg: DictConfig) -> list[dict]:
    validate_config(cfg)
    if not cfg.get("index_dir") or not cfg.get("query"):
        raise ConfigError("index_dir=... and query=... (a video, an image or a folder of them) are required")
    if cfg.output not in ("table", "json"):
        raise ConfigError(f"output={cfg.output!r}; valid: table, json")
    trusted = OmegaConf.select(cfg, "index.trusted", default="auto")
    overrides = OmegaConf.to_container(cfg.search_options, resolve=True) if cfg.get("search_options") else {}
    overrides["milvus_uri"] = OmegaConf.select(cfg, "index.options.milvus_uri", default=None)
    index = MediaIndex.open(cfg.index_dir, trusted=trusted, search_options=overrides, decoder=cfg.get("decoder", "seek"))
    if cfg.get("ckpt_path"):
        check_model(index, cfg.ckpt_path, cfg.model._target_)
    queries, not_queries = query_paths(cfg.query)
    results = [{"query": sk.path, "error": sk.reason, "results": []} for sk in not_queries]
    delta = index.delta_choice(cfg.retrieval.par.delta).value
    good, vecs, errors = index.embed_each(queries)
    results += [{"query": q, "error": e, "results": []} for q, e in errors.items()]
    unreadable = [r["query"] for r in results]
    if not good:
        raise DataError(f"no query could be read ({queries[0]}{', ...' if len(queries) > 1 else ''})")
    all_hits = index.search_vectors(vecs, int(cfg.k), delta, cfg.group_by, cfg.get("ranking", "par"))
    from media_retrieval.reporting.search_output import contact_sheet, print_hits  # noqa: PLC0415 - reporting.search_output (and what it loads) stays unloaded until used

    for q, hits in zip(good, all_hits, strict=True):
        results.append({"query": q, "results": [h.as_dict() for h in hits]})
        if cfg.output == "table":
            print_hits(q, hits, delta, cfg.get("ranking", "par"))
    if cfg.output == "json":
        json.dump(results, sys.stdout, indent=1)
        print()
    elif unreadable:
        print(f"{len(unreadable)} of {len(unreadable) + len(good)} queries could not be read (see the log): "
              f"{', '.join(unreadable)}")
    if cfg.get("sheet"):
        p = contact_sheet(list(zip(good, all_hits, strict=True)), Path(cfg.sheet))
        print(f"contact sheet: {p}", file=sys.stderr if cfg.output == "json" else sys.stdout)
    return results


if __name__ == "__main__":  # python -m media_retrieval.cli.search: the same as `media-retrieval search`
    import sys

    from media_retrieval.cli.main import main

    main(["search", *sys.argv[1:]])
