"""Building an index from a media folder (what ``MediaIndex.build``/``update`` and
``src/index.py`` run): scan, reuse, embed what is new, write a generation.

Incremental: a file whose size and mtime match the live index keeps its rows and embeddings;
new or changed files are embedded, deleted ones dropped. Embedding runs through
``trainer.predict`` (``devices=N`` shards it), each batch written to disk as it is done, so an
interrupted build resumes where it stopped; the new index appears atomically at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.fabric.utilities.rank_zero import _get_rank
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from media_retrieval.data.clips import ClipSpec
from media_retrieval.data.discovery import (
    Skipped,
    chunk_spans,
    content_hash,
    segment_key,
    walk_media,
)
from media_retrieval.data.library import SegmentDataset, skip_failed_collate
from media_retrieval.data.video import media_type, probe_image, probe_video
from media_retrieval.errors import ConfigError, DataError, Interrupted
from media_retrieval.models.inference import autocast, resolve_precision
from media_retrieval.models.registry import model_record
from media_retrieval.retrieval.backends import VectorSearcher, make_backend
from media_retrieval.retrieval.index_store import (
    Generation,
    IndexStore,
    Segment,
    fingerprint,
    preprocess_key,
)
from media_retrieval.retrieval.shards import CtrlCAfterBatch, EmbeddingShardWriter, shard_store
from media_retrieval.utils.devices import accelerator_device, clips_per_batch, decode_workers
from media_retrieval.utils.logs import quiet_lightning

log = logging.getLogger(__name__)


@dataclass
class IndexOptions:
    """How an index is built; every field has the default of ``configs/index.yaml``."""

    backend: str = "exact"
    backend_options: dict = field(default_factory=dict)
    pca_variance: float | None = None
    pca_dim: int | None = None
    rebuild: bool = False
    lock_wait_s: float = 0.0
    precision: str = "auto"  # auto | fp32 | bf16 (models/inference.py: resolve_precision)
    batch_size: int | None = (
        None  # clips per forward pass; None: 1 on CPU, 32 on GPU (clips_per_batch)
    )
    num_workers: int | None = None  # decoding processes; None: cores - 1 (decode_workers)
    seed: int = 42
    trainer: dict = field(
        default_factory=dict
    )  # L.Trainer keyword arguments (devices, strategy, ...)

    @classmethod
    def from_config(cls, cfg: Any) -> IndexOptions:
        """From ``configs/index.yaml``'s composed config (``index.*``, ``batch_size``, ...)."""
        ix = cfg.index
        trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
        trainer.pop("_target_", None)
        pca = ix.pca.enabled
        return cls(
            backend=ix.backend,
            backend_options=OmegaConf.to_container(ix.options, resolve=True),
            pca_variance=ix.pca.variance if pca else None,
            pca_dim=ix.pca.dim if pca else None,
            rebuild=bool(ix.get("rebuild")),
            lock_wait_s=float(ix.get("lock_wait_s") or 0),
            precision=str(ix.get("precision") or "auto"),
            batch_size=int(cfg.batch_size),
            num_workers=int(cfg.num_workers),
            seed=int(cfg.seed),
            trainer=trainer,
        )

    def check(self) -> None:
        make_backend(
            self.backend, self.backend_options
        )  # refuses bad names and options before any work
        if (self.batch_size is not None and self.batch_size < 1) or (
            self.num_workers is not None and self.num_workers < 0
        ):
            raise ConfigError(
                f"batch_size must be >= 1 and num_workers >= 0, got {self.batch_size}, "
                f"{self.num_workers}"
            )


def file_segments(
    path: Path, root: Path, spec: ClipSpec, previous: list[Segment] | None
) -> list[Segment]:
    """The rows of one file: reused from the live index when size and mtime are unchanged,
    otherwise hashed and (videos) probed and cut into ~chunk_s chunks."""
    st = path.stat()
    if previous and previous[0].size == st.st_size and previous[0].mtime_ns == st.st_mtime_ns:
        return previous
    digest = content_hash(path)
    kind = media_type(path)
    spans: list[tuple[int, float | None, float | None]] = [(0, None, None)]
    if kind == "video":
        info = probe_video(path)  # DataError when the container cannot open or claims too much
        spans = chunk_spans(info.duration_s, spec.chunk_s or None, info.packets)
    else:
        probe_image(
            path
        )  # DataError for unreadable headers and decompression bombs, with the reason
    rel = str(path.relative_to(root))
    return [
        Segment(
            segment_key(digest, c, s, e),
            str(path),
            rel,
            kind,
            c,
            s,
            e,
            st.st_size,
            st.st_mtime_ns,
            digest,
        )
        for c, s, e in spans
    ]


def scan_library(
    root: Path, spec: ClipSpec, prev_rows: list[Segment]
) -> tuple[list[Segment], list[Skipped]]:
    """Current segments of the library and what was skipped; ``prev_rows`` (the live index's)
    spare unchanged files a re-read."""
    files, skipped = walk_media(root)
    by_path: dict[str, list[Segment]] = {}
    for s in prev_rows:
        by_path.setdefault(s.path, []).append(s)
    segments: list[Segment] = []
    for f in files:
        try:
            segments += file_segments(f, root, spec, by_path.get(str(f)))
        except (DataError, OSError) as exc:
            skipped.append(Skipped(str(f), f"unreadable: {exc}"))
    for s in skipped:
        log.warning("skipping %s: %s", s.path, s.reason)
    return segments, skipped


def _launches_rank_zero() -> bool:
    """Whether this process is (or will launch) global rank 0: not a rank Lightning started,
    and not the process of another node (``NODE_RANK`` > 0 in a multi-node run, where each
    node's command is started by hand or by a scheduler)."""
    return _get_rank() in (None, 0) and int(os.environ.get("NODE_RANK", "0") or 0) == 0


def _previous(store: IndexStore, rebuild: bool) -> Generation | None:
    """The live generation (checked), or None; a corrupt one blocks an update unless it is being
    replaced anyway (``rebuild``)."""
    try:
        return store.open(trusted=False) if store.current() is not None else None
    except DataError as exc:
        if not rebuild:
            raise
        log.warning("rebuild: the live index is unusable and is replaced (%s)", exc)
        return None


def build_index(
    media_dir: str | Path,
    index_dir: str | Path,
    model: L.LightningModule,
    spec: ClipSpec,
    options: IndexOptions | None = None,
    ckpt_path: str | None = None,
) -> dict[str, Any]:
    """Index ``media_dir`` into ``index_dir`` with ``model`` and clips made by ``spec``.
    Returns the build statistics (``{}`` on ranks other than 0)."""
    options = options or IndexOptions()
    media_dir, store = Path(media_dir).resolve(), IndexStore(Path(index_dir).resolve())
    if not media_dir.is_dir():
        raise ConfigError(f"media_dir={str(media_dir)!r} does not exist or is not a folder")
    options.check()
    # One build per index_dir: rank 0 of a run holds the lock; the ranks it launches run under it.
    lock = (
        store.writer_lock(options.lock_wait_s)
        if _launches_rank_zero()
        else contextlib.nullcontext()
    )
    with lock:
        return _build(media_dir, store, model.eval(), spec, options, ckpt_path)


def _build(
    media_dir: Path,
    store: IndexStore,
    model: L.LightningModule,
    spec: ClipSpec,
    options: IndexOptions,
    ckpt_path: str | None,
) -> dict[str, Any]:
    L.seed_everything(options.seed, workers=True)
    t0 = time.time()
    record = model_record(model, ckpt_path)
    device = accelerator_device(options.trainer.get("accelerator", "auto"))
    precision = resolve_precision(options.precision, device)
    fp = fingerprint(model, record, preprocess_key(spec.key(), precision))
    prev_gen = _previous(store, options.rebuild)
    old = prev_gen.manifest if prev_gen else None
    if old and old["fingerprint"] != fp:
        if not options.rebuild:
            raise ConfigError(
                f"index_dir={str(store.root)!r} was built by another model or preprocessing "
                f"(fingerprint {old['fingerprint']}, {old.get('model_name')}, ckpt "
                f"{old.get('ckpt_path')}); this run's "
                f"is {fp}. Use a new index_dir, or index.rebuild=true to replace it"
            )
        log.info("rebuild: replacing the index built by fingerprint %s", old["fingerprint"])
    prev_rows = prev_gen.segments if prev_gen else []
    segments, skipped = scan_library(media_dir, spec, prev_rows)
    if not model.embeds_stills and any(s.media_type == "image" for s in segments):
        log.warning(
            "this model's embedding ignores what stays the same over a clip (e.g. "
            "model.temporal.center="
            "true): images all embed alike; index images with a model that embeds stills"
        )
    elif model.media_gap and {s.media_type for s in segments} >= {"image", "video"}:
        log.warning("this library mixes images and videos: %s", model.media_gap)
    if not segments:
        raise DataError(f"media_dir={str(media_dir)!r} has no readable video or image files")
    reuse: dict[str, np.ndarray] = {}
    if old and old["fingerprint"] == fp and prev_rows:
        wanted = {s.key for s in segments}
        reuse = {
            s.key: np.asarray(prev_gen.vectors[i])
            for i, s in enumerate(prev_rows)
            if s.key in wanted
        }
    work = store.work_dir(fp)
    done = shard_store(work)
    pending = [s for s in segments if s.key not in reuse and s.key not in done]
    pending = list(
        {s.key: s for s in pending}.values()
    )  # identical content at two paths: embed once
    log.info(
        "%d segments in %s: %d from the index, %d from an interrupted build, %d to embed",
        len(segments),
        media_dir,
        sum(s.key in reuse for s in segments),
        sum(s.key in done and s.key not in reuse for s in segments),
        len(pending),
    )

    trainer_args = {"logger": False, "enable_checkpointing": False, **options.trainer}
    quiet_lightning()
    ctrl_c = CtrlCAfterBatch()
    trainer = L.Trainer(
        **trainer_args,
        # the writer first: a Ctrl-C stops the build after the batch in hand is saved
        callbacks=[EmbeddingShardWriter(work, [s.key for s in pending]), ctrl_c],
    )
    if pending:
        batch_size = options.batch_size or clips_per_batch(device)
        workers = decode_workers() if options.num_workers is None else options.num_workers
        loader = DataLoader(
            SegmentDataset([(s.path, s.start_s, s.end_s) for s in pending], spec),
            batch_size=batch_size,
            num_workers=workers,
            prefetch_factor=4 if workers else None,
            collate_fn=skip_failed_collate,
            shuffle=False,
        )
        # the numerics queries are embedded with: bf16 autocast, or IEEE fp32 (no TF32 on a GPU)
        try:
            with autocast(device, precision):
                trainer.predict(model, dataloaders=loader, return_predictions=False)
        except (SystemExit, Exception) as exc:
            # Lightning turns Ctrl-C into exit(1) after a graceful shutdown; loader workers, which
            # Ctrl-C reaches too, die meanwhile and the loader may raise that first
            if not (isinstance(exc, SystemExit) or ctrl_c.requested):
                raise
            n = shard_store(work).shard_count()
            raise Interrupted(
                f"interrupted: {n} finished batches are kept in {work} and the live index is "
                "unchanged; run the same command again to resume",
                exit_code=130,
            ) from exc
    trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return {}

    done = shard_store(work).read_all()
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

    searcher = VectorSearcher.build(
        x,
        options.backend,
        options.backend_options,
        pca_variance=options.pca_variance,
        pca_dim=options.pca_dim,
    )
    stats = {
        "segments": len(rows),
        "files": len({s.path for s in rows}),
        "embedded": sum(s.key in done for s in pending),
        "reused": sum(s.key in reuse for s in rows),
        "removed": len({s.path for s in prev_rows} - {s.path for s in segments}),
        "skipped": len(skipped),
        "seconds": round(time.time() - t0, 2),
    }
    # the model's δ, clip spec, whitening and encoder hashes: its record, model.json
    # (models/record.py)
    manifest = {
        "fingerprint": fp,
        "model_name": record["hparams"].get("name", record["class"]),
        "ckpt_path": record["ckpt_path"],
        "clip_spec": spec.key(),
        "media_dir": str(media_dir),
        "backend": options.backend,
        "pca_dim": searcher.pca.dim if searcher.pca else None,
        "precision": precision,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stats": stats,
        "skipped_files": [(s.path, s.reason) for s in skipped],
    }
    gen = store.write_generation(rows, x, manifest, model, record, searcher)
    shutil.rmtree(work, ignore_errors=True)
    if work.parent.is_dir() and not any(work.parent.iterdir()):
        work.parent.rmdir()
    return {**stats, "generation": gen.name, "index_dir": str(store.root)}
