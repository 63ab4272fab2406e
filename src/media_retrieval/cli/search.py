"""Query an index by video or image (``src/search.py``).

The query is embedded with the index's own model and preprocessing (stored in the index), the
backend proposes the top-k by Euclidean distance, and PAR keeps those whose cosine with the
query exceeds δ. Output: a rich table (default), JSON (``output=json``), a contact sheet.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from media_retrieval.cli.common import validate_config
from media_retrieval.data.discovery import walk_media
from media_retrieval.data.library import Preprocess, load_clip
from media_retrieval.errors import ConfigError, DataError
from media_retrieval.retrieval.index_store import IndexStore, Segment, fingerprint
from media_retrieval.utils.files import is_regular_file

log = logging.getLogger(__name__)


@dataclass
class Hit:
    rank: int
    segment: Segment
    distance: float
    cosine: float
    kept: bool
    spans: list[tuple[float | None, float | None]]

    def as_dict(self) -> dict:
        s = self.segment
        return {"rank": self.rank, "path": s.path, "rel_path": s.rel_path, "media_type": s.media_type,
                "start_s": s.start_s, "end_s": s.end_s, "spans": self.spans, "distance": self.distance,
                "cosine": self.cosine, "kept_by_par": self.kept}


class Searcher:
    """An opened index: model, preprocessing, vectors, metadata and backend."""

    def __init__(self, index_dir: str | Path, backend_overrides: dict | None = None, decoder: str = "seek",
                 trusted: bool | str = "auto") -> None:
        self.store = IndexStore(index_dir)
        gen = self.store.open(trusted=trusted)  # every file checked before use (docs/search.md)
        self.manifest = gen.manifest
        self.pre = Preprocess.from_spec(self.manifest.get("preprocess"), decoder=decoder)
        self.model = gen.load_model()
        self.model_spec = gen.model_spec()
        if fingerprint(self.model, self.model_spec, self.pre.spec()) != self.manifest.get("fingerprint"):
            raise DataError(f"{gen.path}: the stored model does not match the index fingerprint (files modified?): "
                            "rebuild the index")
        self.segments = gen.segments
        self.vectors = gen.vectors
        self.index = gen.searcher(backend_overrides)

    def check_model(self, ckpt_path: str, model_target: str) -> None:
        """Refuse a checkpoint other than the one the index was built with."""
        from hydra.utils import get_class

        from media_retrieval.utils.checkpoint import load_model

        other = load_model(get_class(model_target), ckpt_path)
        other_spec = {"class": f"{type(other).__module__}.{type(other).__qualname__}"}
        if fingerprint(other, other_spec, self.pre.spec()) != self.manifest["fingerprint"]:
            raise ConfigError(f"ckpt_path={ckpt_path!r} is not the model this index was built with "
                              f"({self.manifest.get('ckpt_path') or self.manifest.get('model_name')}): its embeddings "
                              "are not comparable; search without ckpt_path (the index carries its model) or re-index")

    @torch.inference_mode()
    def embed(self, paths: list[str]) -> np.ndarray:
        clips = [load_clip(p, self.pre) for p in paths]
        return self.model.embed({"clip": torch.stack(clips)}).float().numpy()

    def search(self, q: np.ndarray, k: int, delta: float, group_by: str | None = None) -> list[list[Hit]]:
        """Per query, the top-k hits (PAR flag on each); ``group_by='video'`` merges the chunks of a
        file into one hit (its nearest chunk, with the spans of all its chunks among the hits)."""
        fetch = k if group_by is None else min(len(self.segments), k * 8)
        dist, cos, idx = self.index.search(q, fetch)
        out = []
        for d_row, c_row, i_row in zip(dist, cos, idx, strict=True):
            hits: list[Hit] = []
            by_path: dict[str, Hit] = {}
            for d, c, i in zip(d_row, c_row, i_row, strict=True):
                if i < 0:
                    continue
                seg = self.segments[int(i)]
                if group_by == "video" and seg.path in by_path:
                    by_path[seg.path].spans.append((seg.start_s, seg.end_s))
                    continue
                hit = Hit(len(hits) + 1, seg, float(d), float(c), bool(c > delta), [(seg.start_s, seg.end_s)])
                by_path[seg.path] = hit
                hits.append(hit)
            for h in hits:
                h.spans.sort(key=lambda s: s[0] or 0.0)
            out.append(hits[:k])
        return out


def _span(h: Hit) -> str:
    spans = [s for s in h.spans if s[0] is not None]
    return ", ".join(f"{s:.1f}-{e:.1f}s" for s, e in spans) if spans else ("image" if h.segment.media_type == "image" else "whole")


def print_hits(query: str, hits: list[Hit], delta: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{query}  (PAR δ = {delta}: {sum(h.kept for h in hits)} of {len(hits)} kept)")
    for col, just in [("rank", "right"), ("path", "left"), ("span", "left"), ("distance", "right"),
                      ("cosine", "right"), ("PAR", "center")]:
        table.add_column(col, justify=just)
    for h in hits:
        table.add_row(str(h.rank), h.segment.rel_path, _span(h), f"{h.distance:.4f}", f"{h.cosine:.4f}",
                      "kept" if h.kept else "[dim]dropped[/dim]")
    Console(width=120).print(table)


def thumbnail(path: str, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """Middle frame of a video (span) or the image, as HxWx3 uint8."""
    from media_retrieval.data.video import load_frames

    frames = load_frames(path, 3, min_frames=1, start_s=start_s, end_s=end_s)
    return frames[len(frames) // 2].permute(1, 2, 0).numpy()


def contact_sheet(rows: list[tuple[str, list[Hit]]], path: Path) -> Path:
    from media_retrieval.reporting.figures import gallery_png

    data = []
    for q, hits in rows:
        results = [(thumbnail(h.segment.path, h.segment.start_s, h.segment.end_s),
                    f"{h.rank}. {Path(h.segment.rel_path).name}\n{_span(h)} d={h.distance:.2f}", h.kept) for h in hits]
        data.append((thumbnail(q), Path(q).name, results))
    path.parent.mkdir(parents=True, exist_ok=True)
    return gallery_png(data, path, thumb=128, label_chars=48)


def search(cfg: DictConfig) -> list[dict]:
    validate_config(cfg)
    if not cfg.get("index_dir") or not cfg.get("query"):
        raise ConfigError("index_dir=... and query=... (a video, an image or a folder of them) are required")
    if cfg.output not in ("table", "json"):
        raise ConfigError(f"output={cfg.output!r}; valid: table, json")
    if cfg.group_by not in (None, "video"):
        raise ConfigError(f"group_by={cfg.group_by!r}; valid: null, video")
    if int(cfg.k) < 1:
        raise ConfigError(f"k must be >= 1, got {cfg.k}")
    overrides = OmegaConf.to_container(cfg.search_options, resolve=True) if cfg.get("search_options") else None
    trusted = OmegaConf.select(cfg, "index.trusted", default="auto")
    if trusted not in ("auto", True, False):
        raise ConfigError(f"index.trusted={trusted!r}; valid: auto, true, false")
    s = Searcher(cfg.index_dir, overrides, decoder=cfg.get("decoder", "seek"), trusted=trusted)
    if cfg.get("ckpt_path"):
        s.check_model(cfg.ckpt_path, cfg.model._target_)
    qpath = Path(cfg.query)
    results = []
    if qpath.is_dir():
        files, not_media = walk_media(qpath)
        queries = [str(f) for f in files]
        if not queries:
            raise DataError(f"query folder {qpath} holds no video or image files")
        for sk in not_media:  # listed among the unreadable queries, not silently dropped
            log.warning("skipping query %s: %s", sk.path, sk.reason)
            results.append({"query": sk.path, "error": sk.reason, "results": []})
    elif is_regular_file(qpath):
        queries = [str(qpath)]
    elif qpath.exists():
        raise ConfigError(f"query={str(cfg.query)!r} is not a regular file or folder (a FIFO or device?)")
    else:
        raise ConfigError(f"query={str(cfg.query)!r}: no such file or folder")
    delta = float(cfg.retrieval.par.delta)
    good_queries, vecs = [], []
    for q in queries:  # one at a time: a bad query file is reported, not fatal to the batch
        try:
            vecs.append(s.embed([q])[0])
            good_queries.append(q)
        except DataError as exc:
            log.warning("skipping query %s: %s", q, exc)
            results.append({"query": q, "error": str(exc), "results": []})
    unreadable = [r["query"] for r in results]
    if not vecs:
        raise DataError(f"no query could be read ({queries[0]}{', ...' if len(queries) > 1 else ''})")
    all_hits = s.search(np.stack(vecs), int(cfg.k), delta, cfg.group_by)
    for q, hits in zip(good_queries, all_hits, strict=True):
        results.append({"query": q, "results": [h.as_dict() for h in hits]})
        if cfg.output == "table":
            print_hits(q, hits, delta)
    if cfg.output == "json":
        json.dump(results, sys.stdout, indent=1)
        print()
    elif unreadable:
        print(f"{len(unreadable)} of {len(unreadable) + len(good_queries)} queries could not be read (see the log): "
              f"{', '.join(unreadable)}")
    if cfg.get("sheet"):
        sheet = Path(cfg.sheet)
        p = contact_sheet(list(zip(good_queries, all_hits, strict=True)), sheet)
        print(f"contact sheet: {p}", file=sys.stderr if cfg.output == "json" else sys.stdout)
    return results
