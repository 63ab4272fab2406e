"""The DataModule's shared machinery: from a split table to batches that carry their sample ids
(where items come from and how they split: :mod:`.datasets`).

Every batch is a dict with ``sample_id`` (row of the split table), ``label`` (index into the
global class list, for retrieval) and ``target`` (index into the training classes, -1 for
classes not trained on), plus either ``clip`` (T, C, H, W pixels) or, when a frozen frame
encoder is attached, ``features`` (T, F) read from the on-disk :class:`FrameFeatureCache`
(and, with ``dense_frames``, ``views`` (2, T, F): two views of the clip for InfoNCE).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from media_retrieval.config.data import LABELS
from media_retrieval.data.clips import NORMALIZATIONS, ClipSpec, clip_transform, load_clip
from media_retrieval.data.discovery import (
    HashCache,
    MediaItem,
    Skipped,
    chunk_items,
    segment_key,
)
from media_retrieval.data.feature_cache import CacheJob, FrameFeatureCache, build_caches
from media_retrieval.data.library import skip_failed_collate
from media_retrieval.data.split_dataset import SplitDataset, write_skipped_csv
from media_retrieval.data.splits import (
    ROLES,
    TEST_ROLES,
    Split,
    unlabelled_split,
)
from media_retrieval.data.transforms import TrainClipTransform
from media_retrieval.data.video import load_image, probe_video
from media_retrieval.data.views import eval_view_pair, even_view, random_view
from media_retrieval.errors import DataError

log = logging.getLogger(__name__)

#: the one class of every item under ``data.labels=none``
UNLABELLED = "unlabelled"


class VideoRetrievalDataModule(L.LightningDataModule):
    """Shared machinery; subclasses say where items come from (:meth:`discover_items`) and how
    they split (:meth:`make_split`)."""

    def __init__(
        self,
        clip: ClipSpec | Mapping[str, Any] | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        query_fraction: float = 0.1,
        seed: int = 0,
        cache_dir: str | None = None,
        output_dir: str | None = None,
        split_file: str | None = None,
        feature_batch_size: int = 1,
        skip_short: bool = True,
        augment: dict | None = None,
        m_per_class: int | None = None,
        labels: str = "class",
        dense_frames: int | None = None,
    ) -> None:
        super().__init__()
        # how this data's files become clips (the ``data.clip`` node; validated by ClipSpec
        # itself): saved with the model, reused by index and search. Without one, whole clips.
        if clip is None:
            clip = ClipSpec(chunk_s=None)
        self.clip_spec = clip if isinstance(clip, ClipSpec) else ClipSpec.from_node(clip)
        frames = self.clip_spec.frames
        self.m_per_class = m_per_class

        if labels not in LABELS:
            raise DataError(f"data.labels={labels!r}; valid: {', '.join(LABELS)}")
        if dense_frames is not None and dense_frames < frames:
            raise DataError(
                f"data.dense_frames={dense_frames} must be at least data.clip.frames={frames} "
                "(views are frame subsets of the dense features)"
            )
        # labels=none: no classes (self-supervised training); dense_frames: frames cached per
        # clip, from which training batches cut two views (``views``) for InfoNCE
        self.labels, self.dense_frames = labels, dense_frames

        augment = dict(augment or {})
        self.temporal_jitter = bool(augment.get("temporal_jitter", False))
        # Direction-defined classes: a horizontal flip turns move_left into move_right. Each pair
        # swaps labels when flipped; classes in ``no_flip`` are never flipped.
        self.flip_to: dict[str, str] = {}
        for pair in augment.get("flip_pairs") or []:
            a, b = (str(c) for c in pair)
            self.flip_to.update({a: b, b: a})
        self.no_flip = {str(c) for c in augment.get("no_flip") or []}
        spec = self.clip_spec
        self.train_transform = (
            TrainClipTransform(
                spec.image_size,
                tuple(augment.get("scale", (0.6, 1.0))),
                float(augment.get("hflip", 0.5)),
                resize=spec.resize,
                in_chans=spec.in_chans,
            )
            if augment.get("enabled", False)
            else None
        )
        self.skip_short = skip_short
        self.skipped: list[Skipped] = []
        self.seen_classes: list[str] | None = None  # set by eval: the checkpoint's training classes
        self.eval_mode = False
        self.dense_frames = dense_frames
        self.use_normalization(self.clip_spec.normalize)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_fraction, self.query_fraction, self.seed = val_fraction, query_fraction, seed
        self.cache_dir = cache_dir
        self.output_dir = output_dir
        self.split_file = split_file
        self.feature_batch_size = feature_batch_size
        self.split: Split | None = None
        self.cache: FrameFeatureCache | None = None
        # a clip-level encoder's cache beside the frame features (``model.video``: I3D)
        self.clip_cache: FrameFeatureCache | None = None
        self._clip_encoder: torch.nn.Module | None = None
        self._clip_encoder_spec: ClipSpec | None = None
        self._encoder: torch.nn.Module | None = None
        self._discovered: tuple[list[MediaItem], list[Skipped]] | None = None
        self._hashes: HashCache | None = None
        self._content_keys: dict[str, str] = {}

    @property
    def min_frames(self) -> int:
        """Decodable frames a video needs to be kept (``load_clip`` refuses fewer): a whole
        clip's worth with ``skip_short``, else one. One place for every loader of this module."""
        return self.clip_spec.frames if self.skip_short else 1

    @property
    def hashes(self) -> HashCache:
        """Full-file content hashes (duplicate detection), remembered in the cache folder."""
        if self._hashes is None:
            self._hashes = HashCache(
                Path(self.cache_dir) / "content-hashes.sqlite" if self.cache_dir else None
            )
        return self._hashes

    def content_key(self, item: MediaItem) -> str:
        """The feature-cache key of an item: its content (full-file hash), chunk and span."""
        key = self._content_keys.get(item.key)
        if key is None:
            key = segment_key(self.hashes(item.path), item.chunk, item.start_s, item.end_s)
            self._content_keys[item.key] = key
        return key

    # -------------------------------------------------------------- hooks for subclasses
    def prepare_source(self) -> None:
        """Make data available on disk (e.g. generate a corpus). Rank 0 only."""

    def discover_items(self) -> list[MediaItem]:
        raise NotImplementedError

    def make_split(self, items: list[MediaItem]) -> Split:
        raise NotImplementedError

    # -------------------------------------------------------------- frame features
    def attach_frame_encoder(self, encoder: torch.nn.Module, encoder_spec: dict) -> None:
        """Serve cached frame features instead of pixels (for models with a frozen backbone)."""
        if self.cache_dir is None:
            raise DataError(
                "data.cache_dir is not set: a frozen frame encoder needs a feature cache"
            )
        self._encoder = encoder
        # The decoder is not part of the key: both give pixel-identical frames (tested).
        spec = {
            "encoder": encoder_spec,
            "transform": self.transform.spec(),
            "frames": self.cache_clip_spec.frames,
            "sampling": self.clip_spec.sampling,
            "skip_short": self.skip_short,
        }
        self.cache = FrameFeatureCache(self.cache_dir, spec)
        if self.train_transform is not None:
            log.info(
                "data.augment applies to pixels only: frame features are cached (frozen backbone) "
                "and computed once with the evaluation transform"
            )

    def attach_clip_encoder(
        self, encoder: torch.nn.Module, encoder_spec: dict, normalize: str = "inception"
    ) -> None:
        """Serve a clip-level encoder's cached row (``clip_features``) beside the frame features:
        the same clips, scaled as that encoder expects (``normalize``), one row per clip."""
        if self.cache_dir is None:
            raise DataError(
                "data.cache_dir is not set: a frozen clip encoder needs a feature cache"
            )
        self._clip_encoder = encoder
        self._clip_encoder_spec = replace(self.clip_spec, normalize=normalize)
        spec = {
            "encoder": encoder_spec,
            "transform": clip_transform(self._clip_encoder_spec).spec(),
            "frames": self.clip_spec.frames,
            "sampling": self.clip_spec.sampling,
            "skip_short": self.skip_short,
        }
        self.clip_cache = FrameFeatureCache(self.cache_dir, spec)

    def load_clip_pixels(self, item: MediaItem) -> torch.Tensor:
        """The clip the clip-level encoder reads (its own normalisation)."""
        return load_clip(
            item.path,
            self._clip_encoder_spec,
            item.start_s,
            item.end_s,
            min_frames=self.min_frames,
        )

    def load_pixels(self, item: MediaItem, train: bool = False, flip: bool = False) -> torch.Tensor:
        """Frames of an item, preprocessed; ``train`` adds the configured augmentation (with
        ``flip`` decided by the caller: see :meth:`_load`)."""
        if self.cache is not None:  # the frames the feature cache holds (dense_frames when set)
            return load_clip(
                item.path,
                self.cache_clip_spec,
                item.start_s,
                item.end_s,
                min_frames=self.min_frames,
            )

        augment = train and self.train_transform is not None
        rng = (
            np.random.default_rng(int(torch.randint(0, 2**31, ())))
            if augment and self.temporal_jitter
            else None
        )
        transform = (
            functools.partial(self.train_transform, flip=flip) if augment else self.transform
        )
        return load_clip(
            item.path,
            self.clip_spec,
            item.start_s,
            item.end_s,
            min_frames=self.min_frames,
            rng=rng,
            transform=transform,
        )

    def _flip(self, item: MediaItem, train: bool) -> bool:
        t = self.train_transform
        return bool(
            train and t is not None and item.label not in self.no_flip and torch.rand(()) < t.hflip
        )

    def _check_decodable(self, items: list[MediaItem]) -> list[MediaItem]:
        """Pixel mode has no cache build to catch bad files, so probe each container up front
        (metadata only, no decoding: cheap on UCF101-sized data) and skip what cannot open or
        is too short; a file that still fails to decode mid-epoch is skipped by the DataLoader
        (see :func:`skip_failed_collate`)."""

        good = []
        for it in items:
            try:
                if it.media_type == "image":
                    load_image(it.path)
                else:
                    info = probe_video(it.path)
                    if (
                        self.skip_short
                        and 0 < info.n_frames < self.clip_spec.frames
                        and it.start_s is None
                    ):
                        raise DataError(
                            f"{it.path}: only {info.n_frames} frames, fewer than the "
                            f"{self.clip_spec.frames} sampled"
                        )
                    if info.n_frames == 0 and info.duration_s == 0:
                        raise DataError(f"{it.path}: video has no frames")
                good.append(it)
            except (DataError, OSError, RuntimeError, ValueError) as exc:
                log.warning("skipping %s: %s", it.path, exc)
                self.skipped.append(Skipped(it.path, str(exc)))
        return good

    def _load(self, item: MediaItem, train: bool = False) -> dict:
        """Model input of an item; a flipped training clip of a direction pair carries the
        other class of its pair (``label_as``)."""
        if self.cache is not None or self.clip_cache is not None:
            out = {}
            if self.cache is not None:
                feats = torch.from_numpy(self.cache.get(self.content_key(item)).copy())
                out = self._views(feats, train) if self.dense_frames else {"features": feats}
            if self.clip_cache is not None:
                out["clip_features"] = torch.from_numpy(
                    self.clip_cache.get(self.content_key(item)).copy()
                )
            return out
        flip = self._flip(item, train)
        out = {"clip": self.load_pixels(item, train, flip)}
        if flip and item.label in self.flip_to:
            out["label_as"] = self.flip_to[item.label]
        return out

    def _views(self, feats: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
        """Dense features to model input: ``features`` (a random view in training, the whole
        clip evenly otherwise) and ``views`` (2, frames, F): two random views in training, the
        fixed pair of the label-free validation metric otherwise (:mod:`..views`)."""

        n = feats.shape[0]
        if train:
            rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))
            a, b = (
                random_view(n, self.clip_spec.frames, rng),
                random_view(n, self.clip_spec.frames, rng),
            )
            return {"features": feats[a], "views": torch.stack([feats[a], feats[b]])}
        a, b = eval_view_pair(n, self.clip_spec.frames)
        return {
            "features": feats[even_view(n, self.clip_spec.frames)],
            "views": torch.stack([feats[a], feats[b]]),
        }

    # -------------------------------------------------------------- Lightning hooks
    def items(self) -> list[MediaItem]:
        """Discovered items, long videos cut into chunks (``chunk_s``). Discovery (folder walk,
        content hashes, container probes) runs once; prepare_data and setup share it, and
        what it skipped is kept for skipped.csv."""
        if self._discovered is None:
            self.skipped = []
            items, skipped = chunk_items(self.discover_items(), self.clip_spec.chunk_s)
            if self.labels == "none":  # no classes: folder names are not labels
                items = [replace(it, label=UNLABELLED) for it in items]
            self._discovered = (items, self.skipped + skipped)
        self.skipped = list(self._discovered[1])
        return list(self._discovered[0])

    def use_normalization(self, name: str) -> None:
        """Scale pixels as the model's encoder expects (``ClipSpec.normalize``): the clip spec, the
        evaluation and training transforms and the feature cache's spec follow."""
        self.clip_spec = replace(self.clip_spec, normalize=name)
        self.transform = clip_transform(self.clip_spec)
        if self.train_transform is not None:
            self.train_transform.mean, self.train_transform.std = (
                list(v) for v in NORMALIZATIONS[name]
            )
        # what the feature cache holds per clip: the clip spec's frames, or dense_frames
        self.cache_clip_spec = (
            replace(self.clip_spec, frames=self.dense_frames)
            if self.dense_frames
            else self.clip_spec
        )

    def prepare_data(self) -> None:
        self.prepare_source()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        wanted = [
            (cache, encoder, spec, load)
            for cache, encoder, spec, load in (
                (self.cache, self._encoder, self.cache_clip_spec, self.load_pixels),
                (
                    self.clip_cache,
                    self._clip_encoder,
                    self._clip_encoder_spec,
                    self.load_clip_pixels,
                ),
            )
            if cache is not None and encoder is not None
        ]
        if not wanted:  # pixels: nothing to precompute (no discovery or hashing here)
            return
        items = self.items()
        keys = [self.content_key(it) for it in items]
        if len({replace(spec, normalize="imagenet") for _, _, spec, _ in wanted}) == 1:
            # the same frames for every encoder: decode (and resize) once, normalise per encoder
            spec = wanted[0][2]
            load = functools.partial(
                _load_resized,
                spec=spec,
                resize=clip_transform(spec).resize_frames,
                min_frames=self.min_frames,
            )
            jobs = [CacheJob(c, e, clip_transform(sp).normalize) for c, e, sp, _ in wanted]
            groups = [(jobs, load)]
        else:  # each encoder reads its own frames through its own loader
            groups = [([CacheJob(c, e)], load) for c, e, _, load in wanted]
        for group, load in groups:
            build_caches(
                group,
                items,
                keys,
                load,
                batch_size=self.feature_batch_size,
                num_workers=self.num_workers,
                device=device,
            )

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        if self.split_file:
            self.split = Split.read_csv(self.split_file)
        else:
            items = self.items()
            caches = [c for c in (self.cache, self.clip_cache) if c is not None]
            if caches:
                bad = {k: v for c in caches for k, v in c.skipped().items()}
                self.skipped += [
                    Skipped(it.path, bad[self.content_key(it)])
                    for it in items
                    if self.content_key(it) in bad
                ]
                items = [it for it in items if self.content_key(it) not in bad]
                missing = [it.path for it in items for c in caches if self.content_key(it) not in c]
                if missing:
                    raise DataError(
                        f"{len(missing)} items have no cached features (first: {missing[0]}); "
                        "run prepare_data() first"
                    )
            else:
                items = self._check_decodable(items)
            if not items:
                raise DataError("no usable media left after skipping bad files (see skipped.csv)")
            self.split = (
                unlabelled_split(items, self.val_fraction, self.seed)
                if self.labels == "none"
                else self.make_split(items)
            )
        if self.output_dir and rank_zero_only.rank == 0:
            self.split.write_csv(Path(self.output_dir) / "split.csv")
            write_skipped_csv(self.skipped, Path(self.output_dir) / "skipped.csv")
        counts = {r: len(self.split.ids(r)) for r in ROLES}
        log.info("split: %s; train classes: %d", counts, len(self.split.train_classes))
        unseen = sorted(
            {it.label for it in self.split.items if not it.seen} - set(self.split.train_classes)
        )
        if unseen and self.labels != "none":
            log.info(
                "%d class(es) held out of training as unseen, to measure retrieval of classes "
                "never trained "
                "on: %s; to train on every class: %s",
                len(unseen),
                ", ".join(unseen[:10]) + (" ..." if len(unseen) > 10 else ""),
                "data.unseen_classes=0"
                if hasattr(self, "unseen_classes")
                else "a class map or data.* of your own",
            )

    @property
    def num_classes(self) -> int:
        assert self.split is not None, "call setup() first"
        return len(self.split.train_classes)

    def _loader(self, roles: tuple[str, ...], train: bool) -> DataLoader:
        assert self.split is not None, "call setup() first"
        ids = self.split.ids(*roles)
        sampler = self._class_balanced_sampler(ids) if train and self.m_per_class else None
        cached = self.cache is not None or self.clip_cache is not None  # rows in memory maps
        return DataLoader(
            SplitDataset(self.split, ids, self._load, train=train),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            collate_fn=skip_failed_collate,
            drop_last=False,
            num_workers=0 if cached else self.num_workers,
            # decoding workers stay up between epochs (pixel models): no re-spawn per epoch
            persistent_workers=not cached and self.num_workers > 0 and train,
        )

    def _class_balanced_sampler(self, ids: list[int]):
        """Batches of ``m_per_class`` clips from each of batch_size / m classes (what metric
        losses need to find positives), from pytorch-metric-learning."""
        from pytorch_metric_learning.samplers import MPerClassSampler  # noqa: PLC0415 - heavy; only class-balanced batches need it

        m, bs = int(self.m_per_class), self.batch_size
        n_classes = len(self.split.train_classes)
        if bs % m or bs // m > n_classes:
            raise DataError(
                f"data.m_per_class={m} needs data.batch_size ({bs}) to be a multiple of it and at "
                f"most m x {n_classes} training classes"
            )
        labels = [self.split.train_index[self.split.items[i].label] for i in ids]
        return MPerClassSampler(
            labels, m, batch_size=bs, length_before_new_iter=max(len(ids) // bs, 1) * bs
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(("train",), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(("val",), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(TEST_ROLES, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def _load_resized(item: MediaItem, spec: ClipSpec, resize, min_frames: int) -> torch.Tensor:
    """Decoded, resized uint8 frames, before any encoder's normalisation."""
    return load_clip(
        item.path, spec, item.start_s, item.end_s, transform=resize, min_frames=min_frames
    )
