"""Index a media library (``src/index.py``): embed every video chunk and image, write the index.

Incremental: a file whose size and mtime match the live index keeps its rows and embeddings;
new or changed files are embedded, deleted ones dropped. Embedding runs through
``trainer.predict`` (``trainer.devices=N`` shards it), each batch written to disk as it is done,
so an interrupted build resumes where it stopped; the new index appears atomically at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
from hydra.utils import get_class, instantiate
from lightning.fabric.utilities.rank_zero import _get_rank
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from media_retrieval.callbacks.prediction_writer import EmbeddingShardWriter, read_shards
from media_retrieval.cli.common import build, validate_config
from media_retrieval.data.datamodule import skip_failed_collate
from media_retrieval.data.discovery import Skipped, chunk_spans, content_hash, walk_media
from media_retrieval.data.library import Preprocess, SegmentDataset
from media_retrieval.data.video import media_type, probe_image, probe_video
from media_retrieval.errors import ConfigError, DataError, Interrupted
from media_retrieval.retrieval.index_store import (
    Generation,
    IndexStore,
    Segment,
    fingerprint,
    segment_key,
)
from media_retrieval.utils.checkpoint import load_model

log = logging.getLogger(__name__)


def preprocess_from_cfg(cfg: DictConfig) -> Preprocess:
    p = cfg.preprocess
    return Preprocess(frames=int(p.frames), image_size=int(p.image_size), resize=str(p.resize),
                      in_chans=int(p.in_chans), sampling=str(p.sampling),
                      chunk_s=None if p.chunk_s is None else float(p.chunk_s), decoder=str(p.decoder))


def model_from_cfg(cfg: DictConfig) -> tuple[L.LightningModule, dict]:
    """The embedding model (checkpoint, or a model with nothing to train) and its spec."""
    if cfg.get("ckpt_path"):
        model = load_model(get_class(cfg.model._target_), cfg.ckpt_path)
    else:
        model = build(cfg.model)
        if model.has_trainable_embedding:
            raise ConfigError("ckpt_path is required: this model's embedding must be trained first "
                              "(only a frozen backbone with model.temporal.cell=none embeds without a checkpoint)")
    cls = type(model)
    hparams = OmegaConf.to_container(OmegaConf.create(dict(model.hparams)), resolve=True)
    spec = {"class": f"{cls.__module__}.{cls.__qualname__}", "hparams": hparams,
            "ckpt_path": str(Path(cfg.ckpt_path).resolve()) if cfg.get("ckpt_path") else None}
    return model.eval(), spec


def file_segments(path: Path, root: Path, pre: Preprocess, previous: list[Segment] | None) -> list[Segment]:
    """The rows of one file: reused from the live index when size and mtime are unchanged,
    otherwise hashed and (videos) probed and cut into ~chunk_s chunks."""
    st = path.stat()
    if previous and previous[0].size == st.st_size and previous[0].mtime_ns == st.st_mtime_ns:
        return previous
    digest = content_hash(path)
    kind = media_type(path)
    spans: list[tuple[int, float | None, float | None]] = [(0, None, None)]
    if kind == "video":
        duration = probe_video(path).duration_s  # DataError when the container cannot open
        spans = chunk_spans(duration, pre.chunk_s or None)
    else:
        probe_image(path)  # DataError for unreadable headers and decompression bombs, with the reason
    rel = str(path.relative_to(root))
    return [Segment(segment_key(digest, c, s, e), str(path), rel, kind, c, s, e, st.st_size, st.st_mtime_ns, digest)
            for c, s, e in spans]


def scan_library(root: Path, pre: Preprocess, prev_rows: list[Segment]) -> tuple[list[Segment], list[Skipped]]:
    """Current segments of the library and what was skipped; ``prev_rows`` (the live index's)
    spare unchanged files a re-read."""
    files, skipped = walk_media(root)
    by_path: dict[str, list[Segment]] = {}
    for s in prev_rows:
        by_path.setdefault(s.path, []).append(s)
    segments: list[Segment] = []
    for f in files:
        try:
            segments += file_segments(f, root, pre, by_path.get(str(f)))
        except (DataError, OSError) as exc:
            skipped.append(Skipped(str(f), f"unreadable: {exc}"))
    for s in skipped:
        log.warning("skipping %s: %s", s.path, s.reason)
    return segments, skipped


def _previous(store: IndexStore, rebuild: bool) -> Generation | None:
    """The live generation (checked), or None; a corrupt one blocks an update unless it is being
    replaced anyway (``index.rebuild=true``)."""
    try:
        return store.open(trusted=False) if store.current() is not None else None
    except DataError as exc:
        if not rebuild:
            raise
        log.warning("index.rebuild=true: the live index is unusable and is replaced (%s)", exc)
        return None


def build_index(cfg: DictConfig) -> dict:
    validate_config(cfg)
    if not cfg.get("media_dir") or not cfg.get("index_dir"):
        raise ConfigError("media_dir=... and index_dir=... are required (the folder to index and where the index goes)")
    media_dir, store = Path(cfg.media_dir).resolve(), IndexStore(Path(cfg.index_dir).resolve())
    if not media_dir.is_dir():
        raise ConfigError(f"media_dir={str(cfg.media_dir)!r} does not exist or is not a folder")
    from media_retrieval.retrieval.backends import make_backend

    make_backend(cfg.index.backend, OmegaConf.to_container(cfg.index.options, resolve=True))  # checks options early
    # One build per index_dir: rank 0 of a run holds the lock; the ranks it launches run under it.
    lock = store.writer_lock(float(cfg.index.get("lock_wait_s") or 0)) if _get_rank() in (None, 0) \
        else contextlib.nullcontext()
    with lock:
        return _build(cfg, media_dir, store)


def _build(cfg: DictConfig, media_dir: Path, store: IndexStore) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    t0 = time.time()
    pre = preprocess_from_cfg(cfg)
    model, spec = model_from_cfg(cfg)
    fp = fingerprint(model, spec, pre.spec())
    prev_gen = _previous(store, bool(cfg.index.get("rebuild")))
    old = prev_gen.manifest if prev_gen else None
    if old and old["fingerprint"] != fp:
        if not cfg.index.get("rebuild"):
            raise ConfigError(
                f"index_dir={str(cfg.index_dir)!r} was built by another model or preprocessing "
                f"(fingerprint {old['fingerprint']}, {old.get('model_name')}, ckpt {old.get('ckpt_path')}); this run's "
                f"is {fp}. Use a new index_dir, or index.rebuild=true to replace it")
        log.info("index.rebuild=true: replacing the index built by fingerprint %s", old["fingerprint"])
    prev_rows = prev_gen.segments if prev_gen else []
    segments, skipped = scan_library(media_dir, pre, prev_rows)
    if getattr(getattr(model, "temporal", None), "center", False) and any(s.media_type == "image" for s in segments):
        log.warning("this model subtracts each clip's mean frame feature (model.temporal.center=true): "
                    "images carry no motion and all embed alike; index images with a "
                    "model.temporal.center=false or cell=none model")
    if not segments:
        raise DataError(f"media_dir={str(media_dir)!r} has no readable video or image files")
    reuse: dict[str, np.ndarray] = {}
    if old and old["fingerprint"] == fp and prev_rows:
        wanted = {s.key for s in segments}
        reuse = {s.key: np.asarray(prev_gen.vectors[i]) for i, s in enumerate(prev_rows) if s.key in wanted}
    work = store.work_dir(fp)
    done = read_shards(work)
    pending = [s for s in segments if s.key not in reuse and s.key not in done]
    pending = list({s.key: s for s in pending}.values())  # identical content at two paths: embed once
    log.info("%d segments in %s: %d from the index, %d from an interrupted build, %d to embed",
             len(segments), media_dir, sum(s.key in reuse for s in segments),
             sum(s.key in done and s.key not in reuse for s in segments), len(pending))

    trainer: L.Trainer = instantiate(cfg.trainer, logger=False,
                                     callbacks=[EmbeddingShardWriter(work, [s.key for s in pending])])
    if pending:
        loader = DataLoader(SegmentDataset([(s.path, s.start_s, s.end_s) for s in pending], pre),
                            batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers),
                            collate_fn=skip_failed_collate, shuffle=False)
        try:
            trainer.predict(model, dataloaders=loader, return_predictions=False)
        except SystemExit as exc:  # Lightning turns Ctrl-C into exit(1) after a graceful shutdown
            n = len(list(work.glob("shard-*.npz")))
            raise Interrupted(f"interrupted: {n} finished batches are kept in {work} and the live index is "
                              "unchanged; run the same command again to resume", exit_code=130) from exc
    trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return {}

    done = read_shards(work)
    vectors, rows, failed = [], [], []
    for s in segments:
        v = reuse.get(s.key)
        if v is None:
            v = done.get(s.key)
        if v is None:
            failed.append(Skipped(s.path, "could not be decoded (see the log)"))
            continue
        rows.append(s)
        vectors.append(v)
    if not rows:
        raise DataError(f"no file under {media_dir} could be embedded (see the log)")
    skipped += list({f.path: f for f in failed}.values())
    x = np.stack(vectors).astype(np.float32)
    from media_retrieval.retrieval.backends import VectorSearcher

    ix = cfg.index
    searcher = VectorSearcher.build(x, ix.backend, OmegaConf.to_container(ix.options, resolve=True),
                                    pca_variance=ix.pca.variance if ix.pca.enabled else None,
                                    pca_dim=ix.pca.dim if ix.pca.enabled else None)
    stats = {"segments": len(rows), "files": len({s.path for s in rows}),
             "embedded": sum(s.key in done for s in pending),
             "reused": sum(s.key in reuse for s in rows),
             "removed": len({s.path for s in prev_rows} - {s.path for s in segments}),
             "skipped": len(skipped), "seconds": round(time.time() - t0, 2)}
    manifest = {"fingerprint": fp, "model_name": spec["hparams"].get("name", spec["class"]),
                "ckpt_path": spec["ckpt_path"], "preprocess": pre.spec(), "media_dir": str(media_dir),
                "backend": ix.backend, "pca_dim": searcher.pca.dim if searcher.pca else None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stats": stats,
                "skipped_files": [(s.path, s.reason) for s in skipped]}
    gen = store.write_generation(rows, x, manifest, model, spec, searcher)
    shutil.rmtree(work, ignore_errors=True)
    if work.parent.is_dir() and not any(work.parent.iterdir()):
        work.parent.rmdir()
    _print_summary(store.root, gen, stats)
    return stats


def _print_summary(root: Path, gen: Path, stats: dict) -> None:
    print(f"index: {root} ({gen.name}): {stats['segments']} segments from {stats['files']} files; "
          f"embedded {stats['embedded']}, reused {stats['reused']}, removed {stats['removed']} deleted files, "
          f"skipped {stats['skipped']} ({stats['seconds']} s)")
    if os.environ.get("MEDIA_RETRIEVAL_QUIET") is None and stats["skipped"]:
        print(f"skipped files are listed in {gen / 'metadata.sqlite'} (table skipped)")

