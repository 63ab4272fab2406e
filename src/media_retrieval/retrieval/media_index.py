"""The Python API over an index: build, open, search, update, reload. No Hydra needed.

    from media_retrieval import MediaIndex, load_model

    index = MediaIndex.build("~/Videos", "~/video-index", model=load_model("best.ckpt"))
    hits = index.search("query.mp4", k=10)            # typed hits, PAR flag on each
    index.update()                                     # re-scan the media folder, embed what
    changed

The command line (``src/index.py``, ``src/search.py``) and the service call these same objects.

Concurrency: searches are safe from several threads (each reads one immutable snapshot of the
generation); :meth:`MediaIndex.reload` swaps the snapshot atomically. While a ``MediaIndex``
holds a generation, a newer build leaves that generation on disk (a shared reader lease);
it is removed by the first build after no reader holds it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from media_retrieval.config.retrieval import DeltaChoice
from media_retrieval.data.clips import ClipSpec, load_clip
from media_retrieval.data.library import query_paths
from media_retrieval.data.video import media_type
from media_retrieval.errors import ConfigError, DataError
from media_retrieval.models import CNNLSTM
from media_retrieval.models.inference import PRECISIONS, autocast, inference_layout
from media_retrieval.models.record import ModelRecord, qualified_name, read_record
from media_retrieval.models.registry import load_model
from media_retrieval.retrieval.index_store import (
    Generation,
    IndexStore,
    Segment,
    corrupt,
    fingerprint,
    preprocess_key,
)
from media_retrieval.retrieval.indexer import IndexOptions, build_index
from media_retrieval.retrieval.rankers import make_ranker

log = logging.getLogger(__name__)


@dataclass
class Hit:
    """One search result: the indexed segment and how it relates to the query."""

    rank: int
    segment: Segment
    distance: float
    cosine: float
    kept: bool  # kept by the ranking method (PAR: cosine > δ)
    spans: list[tuple[float | None, float | None]] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Stable identity of the segment (content hash + chunk span): survives renames."""
        return self.segment.key

    @property
    def rel_path(self) -> str:
        return self.segment.rel_path

    def as_dict(self) -> dict[str, Any]:
        s = self.segment
        return {
            "rank": self.rank,
            "key": s.key,
            "path": s.path,
            "rel_path": s.rel_path,
            "media_type": s.media_type,
            "start_s": s.start_s,
            "end_s": s.end_s,
            "spans": self.spans,
            "distance": self.distance,
            "cosine": self.cosine,
            "kept": self.kept,
            "kept_by_par": self.kept,
        }  # deprecated alias of "kept" (it is any ranking's, not only PAR's)


@dataclass
class SearchResult:
    """The hits of one query with what produced them (one generation answers both the
    embedding and the search, even while a newer one is switched in)."""

    generation: str
    delta: float
    hits: list[Hit]


@dataclass(frozen=True)
class _Snapshot:
    """Everything one generation answers with; never mutated, swapped whole by reload()."""

    generation: Generation
    model: torch.nn.Module
    clip_spec: ClipSpec
    searcher: Any
    lease: Any
    record: ModelRecord  # the model's record (model.json): its δ among the rest
    precision: str = "fp32"  # the inference precision the index was built with; queries use it too


def default_model() -> torch.nn.Module:
    """The model with nothing to train: ImageNet EfficientNet-Lite0, mean of frame features."""
    return CNNLSTM(
        backbone={"name": "efficientnet_lite0", "weights": "imagenet"},
        temporal={"cell": "none"},
        name="lite0_mean",
    ).eval()


class MediaIndex:
    """An opened index: its model, clip spec, vectors, metadata and search backend."""

    def __init__(
        self,
        index_dir: str | Path,
        *,
        trusted: bool | str = "auto",
        search_options: dict | None = None,
        decoder: str | None = None,
    ) -> None:
        self.store = IndexStore(index_dir)
        self._trusted, self._search_options, self._decoder = trusted, search_options, decoder
        self._lock = threading.Lock()
        self._snap = self._load()
        self._by_key: tuple[str, dict[str, Segment]] | None = None
        self._gap_checked: set[tuple[str, str]] = set()  # (generation, media type): _warn_media_gap

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, index_dir: str | Path, **kwargs: Any) -> MediaIndex:
        """Open an index for searching (every file is checked first: docs/search.md)."""
        return cls(index_dir, **kwargs)

    @classmethod
    def open_configured(cls, cfg: DictConfig) -> MediaIndex:
        """``cfg.index_dir`` opened as a search config says: trust (``index.trusted``), the
        query-time backend knobs (``search_options``), the Milvus server the user trusts
        (``index.options.milvus_uri``; an index cannot name one) and the query decoder."""
        options = (
            OmegaConf.to_container(cfg.search_options, resolve=True)
            if cfg.get("search_options")
            else {}
        )
        options["milvus_uri"] = OmegaConf.select(cfg, "index.options.milvus_uri", default=None)
        trusted = OmegaConf.select(cfg, "index.trusted", default="auto")
        return cls(
            cfg.index_dir, trusted=trusted, search_options=options, decoder=cfg.get("decoder")
        )

    @classmethod
    def build(
        cls,
        media_dir: str | Path,
        index_dir: str | Path,
        model: torch.nn.Module | str | Path | None = None,
        *,
        clip_spec: ClipSpec | None = None,
        options: IndexOptions | None = None,
        **open_kwargs: Any,
    ) -> MediaIndex:
        """Index ``media_dir`` (or update the index already in ``index_dir``) and open it.

        ``model``: a model, a checkpoint path, or None for :func:`default_model`. ``clip_spec``:
        how files become clips; default the model's own (saved in its checkpoint)."""
        ckpt_path = None
        if isinstance(model, (str, Path)):
            ckpt_path, model = str(model), load_model(model)
        model = model if model is not None else default_model()
        spec = (
            clip_spec
            or getattr(model, "input_spec", None)
            or ClipSpec(image_size=int(getattr(model, "hparams", {}).get("input_size", 224)))
        )  # the model's own: size,
        # channels (a grayscale model gets grayscale clips) and normalisation
        build_index(media_dir, index_dir, model, spec, options, ckpt_path=ckpt_path)
        return cls(index_dir, **open_kwargs)

    def _load(self) -> _Snapshot:
        name = self.store.current_name(required=True)
        lease = self.store.reader_lease(name)  # before reading: a concurrent build then keeps it
        try:
            gen = self.store.open(trusted=self._trusted)
            if gen.path.name != name:  # CURRENT moved between the two reads: take the newer one
                lease.close()
                lease = self.store.reader_lease(gen.path.name)
            spec = ClipSpec.from_dict(gen.manifest.get("clip_spec"), decoder=self._decoder)

            model = inference_layout(
                gen.load_model()
            )  # queries run on the builds' layout (C3D: channels_last_3d)

            precision = gen.manifest.get("precision") or "fp32"
            if precision not in PRECISIONS:
                raise DataError(
                    f"{gen.path}: manifest precision {precision!r} is not one of "
                    f"{', '.join(PRECISIONS)}"
                )
            if fingerprint(
                model, gen.model_spec, preprocess_key(spec.key(), precision)
            ) != gen.manifest.get("fingerprint"):
                raise DataError(
                    f"{gen.path}: the stored model does not match the index fingerprint (files "
                    "modified?): rebuild the index"
                )
            try:  # an index built before model records kept its δ in the manifest
                record = read_record(gen.model_spec, legacy_delta=gen.manifest.get("par_delta"))
            except DataError as exc:
                raise corrupt(gen.path, f"model.json: {exc}") from exc
            return _Snapshot(
                gen, model, spec, gen.searcher(self._search_options), lease, record, precision
            )
        except BaseException:
            lease.close()
            raise

    def reload(self) -> bool:
        """Switch to a newer generation if one was written since; searches in flight finish on
        the one they started with. True when it switched."""
        if self.store.current_name(required=True) == self._snap.generation.path.name:
            return False
        with self._lock:  # several threads may notice at once: one loads, the others find it done
            if self.store.current_name(required=True) == self._snap.generation.path.name:
                return False
            old, self._snap = self._snap, self._load()
            self._by_key = None
        old.lease.close()
        return True

    def update(self, options: IndexOptions | None = None) -> dict[str, Any]:
        """Re-scan the media folder this index was built from with the index's own model and
        clip spec (new and changed files embedded, deleted ones dropped), then reload."""
        snap = self._snap
        stats = build_index(
            snap.generation.media_root,
            self.store.root,
            snap.model,
            snap.clip_spec,
            options,
            ckpt_path=snap.generation.manifest.get("ckpt_path"),
        )
        self.reload()
        return stats

    def close(self) -> None:
        self._snap.lease.close()

    def __enter__(self) -> MediaIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ properties
    @property
    def manifest(self) -> dict:
        return self._snap.generation.manifest

    @property
    def model(self) -> torch.nn.Module:
        return self._snap.model

    @property
    def record(self) -> ModelRecord:
        """The record of the model that built the live generation (class, arguments, clip
        spec, δ, whitening, encoder hashes)."""
        return self._snap.record

    @property
    def clip_spec(self) -> ClipSpec:
        return self._snap.clip_spec

    @property
    def par_delta(self) -> float:
        """PAR's δ for this index: the one its model chose on validation clips (recorded at
        build time), else the default; a value outside [-1, 1] in a foreign manifest is ignored."""
        return self._delta(self._snap).value

    def delta_choice(self, requested: float | str | None = None) -> DeltaChoice:
        """The δ a search with ``retrieval.par.delta=requested`` uses, and where it came from."""
        return self._delta(self._snap, requested)

    @property
    def segments(self) -> list[Segment]:
        return self._snap.generation.segments

    @property
    def vectors(self) -> np.ndarray:
        return self._snap.generation.vectors

    @property
    def generation(self) -> str:
        return self._snap.generation.path.name

    @property
    def media_root(self) -> Path:
        return self._snap.generation.media_root

    def segment(self, key: str) -> Segment | None:
        """The indexed segment with this stable key (None when the current generation has none)."""
        snap, cached = self._snap, self._by_key
        if cached is None or cached[0] != snap.generation.path.name:
            cached = (snap.generation.path.name, {seg.key: seg for seg in snap.generation.segments})
            self._by_key = cached
        return cached[1].get(key)

    def built_by(self, model: torch.nn.Module) -> bool:
        """Whether ``model`` (weights, class) and this index's clip spec make this index's
        embeddings: only then are its query embeddings comparable."""
        key = preprocess_key(self.clip_spec.key(), self._snap.precision)
        return fingerprint(model, {"class": qualified_name(type(model))}, key) == self.manifest.get(
            "fingerprint"
        )

    def require_model(self, model: torch.nn.Module, ckpt_path: str) -> None:
        """Refuse a checkpoint other than the one the index was built with (:meth:`built_by`)."""
        if not self.built_by(model):
            raise ConfigError(
                f"ckpt_path={ckpt_path!r} is not the model this index was built with "
                f"({self.manifest.get('ckpt_path') or self.manifest.get('model_name')}): its "
                "embeddings "
                "are not comparable; search without ckpt_path (the index carries its model) or "
                "re-index"
            )

    # ------------------------------------------------------------------ searching
    def embed(self, paths: list[str | Path]) -> np.ndarray:
        """(N, D) embeddings of files, made into clips exactly as the indexed media were."""
        return self._embed(self._snap, paths)

    @staticmethod
    @torch.inference_mode()
    def _embed(snap: _Snapshot, paths: list[str | Path]) -> np.ndarray:
        """Queries are embedded as the index was: its clip spec, its precision (bf16 autocast
        on whatever device this process uses)."""
        clips = [load_clip(p, snap.clip_spec) for p in paths]
        with autocast(snap.model.device, snap.precision):
            return (
                snap.model.embed({"clip": torch.stack(clips).to(snap.model.device)})
                .float()
                .cpu()
                .numpy()
            )

    def _warn_media_gap(self, snap: _Snapshot, paths: list[str | Path]) -> None:
        """Once per generation and media type: a query of one media type against items of the
        other, with a model that embeds the two apart (``model.media_gap``), finds mostly its own
        type; say so and name the fix, rather than return a quietly one-sided list."""
        gap = getattr(snap.model, "media_gap", None)
        if not gap:
            return

        name = snap.generation.path.name
        # each (generation, media type) is looked at once: the scan of the segments is O(N), and
        # this runs on every query of the service
        for kind in {media_type(p) for p in paths} - {
            None,
            *(k for g, k in self._gap_checked if g == name),
        }:
            self._gap_checked.add((name, kind))
            other = {"image", "video"} - {kind}
            if any(seg.media_type in other for seg in snap.generation.segments):
                log.warning("%s query against an index holding %ss: %s", kind, other.pop(), gap)

    def embed_each(self, paths: list[str | Path]) -> tuple[list[str], np.ndarray, dict[str, str]]:
        """Embed files one at a time, so one unreadable file is reported, not fatal to the
        batch: (the paths read, their (N, D) embeddings, {unreadable path: reason})."""
        good, vecs, errors = [], [], {}
        self._warn_media_gap(self._snap, paths)
        for p in paths:
            try:
                vecs.append(self.embed([p])[0])
                good.append(str(p))
            except DataError as exc:
                log.warning("skipping query %s: %s", p, exc)
                errors[str(p)] = str(exc)
        dim = self._snap.model.embed_dim if not vecs else vecs[0].shape[0]
        return good, np.stack(vecs) if vecs else np.zeros((0, dim), np.float32), errors

    def search_files(
        self,
        query: str | Path,
        k: int = 10,
        delta: float | None = None,
        group_by: str | None = None,
        ranking: str = "par",
    ) -> tuple[list[tuple[str, list[Hit]]], dict[str, str]]:
        """Search with each file ``query`` names (a file, or the videos and images in a folder):
        ([(query, its hits)], {what could not be a query or be read: why}). One bad file is
        reported, not fatal to the rest; a DataError only when none could be read."""
        queries, not_queries = query_paths(query)
        errors = {sk.path: sk.reason for sk in not_queries}
        good, vecs, unreadable = self.embed_each(queries)
        errors.update(unreadable)
        if not good:
            raise DataError(
                f"no query could be read ({queries[0]}{', ...' if len(queries) > 1 else ''})"
            )
        return list(
            zip(good, self.search_vectors(vecs, k, delta, group_by, ranking), strict=True)
        ), errors

    def search(
        self,
        query: str | Path | np.ndarray | torch.Tensor,
        k: int = 10,
        delta: float | None = None,
        group_by: str | None = None,
        ranking: str = "par",
    ) -> list[Hit]:
        """Top-k hits for one query: a file path, or an embedding (D,)."""
        return self.search_one(query, k, delta, group_by, ranking).hits

    def search_one(
        self,
        query: str | Path | np.ndarray | torch.Tensor,
        k: int = 10,
        delta: float | None = None,
        group_by: str | None = None,
        ranking: str = "par",
    ) -> SearchResult:
        """:meth:`search` with the generation and δ that answered: the query is embedded and
        searched by one generation's model and vectors, even if a newer one is switched in
        meanwhile (the service's path)."""
        snap = self._snap
        if isinstance(query, (str, Path)):
            self._warn_media_gap(snap, [query])
            q = self._embed(snap, [query])
        else:
            q = np.asarray(
                query.detach().cpu() if isinstance(query, torch.Tensor) else query, dtype=np.float32
            )
            q = q.reshape(1, -1)
        delta = self._delta(snap, delta).value
        return SearchResult(
            snap.generation.path.name, delta, self._search(snap, q, k, delta, group_by, ranking)[0]
        )

    def search_vectors(
        self,
        q: np.ndarray,
        k: int,
        delta: float | None = None,
        group_by: str | None = None,
        ranking: str = "par",
    ) -> list[list[Hit]]:
        """Per query embedding, the top-k hits in Euclidean order, each flagged ``kept`` by the
        ranking method (:mod:`media_retrieval.retrieval.rankers`: ``par`` keeps cosine > δ);
        ``group_by='video'`` merges the chunks of a file into one hit (its nearest chunk, with
        the spans of all its chunks among the hits). ``delta=None``: the index's own δ
        (:attr:`par_delta`)."""
        snap = self._snap
        return self._search(snap, q, k, self._delta(snap, delta).value, group_by, ranking)

    @staticmethod
    def _delta(snap: _Snapshot, requested: float | str | None = None) -> DeltaChoice:
        """The δ to use: the user's, else the one the generation's model record holds."""
        return snap.record.delta_choice(requested)

    @staticmethod
    def _search(
        snap: _Snapshot, q: np.ndarray, k: int, delta: float, group_by: str | None, ranking: str
    ) -> list[list[Hit]]:
        if group_by not in (None, "video"):
            raise ConfigError(f"group_by={group_by!r}; valid: null, video")
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        segments = snap.generation.segments
        if q.ndim != 2 or q.shape[1] != snap.generation.vectors.shape[1]:
            raise ConfigError(
                f"query embeddings must be (N, {snap.generation.vectors.shape[1]}), got {q.shape}"
            )
        fetch = k if group_by is None else min(len(segments), k * 8)
        dist, cos, idx = snap.searcher.search(q, fetch)
        kept = make_ranker(ranking, delta).keep(cos, dist)
        out = []
        for d_row, c_row, i_row, k_row in zip(dist, cos, idx, kept, strict=True):
            hits: list[Hit] = []
            by_path: dict[str, Hit] = {}
            for d, c, i, keep in zip(d_row, c_row, i_row, k_row, strict=True):
                if i < 0:
                    continue
                seg = segments[int(i)]
                if group_by == "video" and seg.path in by_path:
                    by_path[seg.path].spans.append((seg.start_s, seg.end_s))
                    continue
                hit = Hit(
                    len(hits) + 1, seg, float(d), float(c), bool(keep), [(seg.start_s, seg.end_s)]
                )
                by_path[seg.path] = hit
                hits.append(hit)
            for h in hits:
                h.spans.sort(key=lambda s: s[0] or 0.0)
            out.append(hits[:k])
        return out
