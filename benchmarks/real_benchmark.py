"""Quality on real footage: leave-one-source-out over the eight sets of ``real-clips`` (issue 27).

Each fold tests on one source, leave-one-out inside it (every clip a query, the others its
gallery; a query's siblings, clips cut from the same source video, are not ranked: JHMDB's
file-name prefix before ``_<class>_``), and may use the other seven for everything else.

The protocol, fixed before any test fold was scored (this file, committed first; round 2 at
c193ff1, round 3 as described here):

- **Validation.** Every choice of a fold is made on its training sources, each held out in turn
  (its classes unseen, like the test) with the fold's other training sources as the inner
  training set. The training-free choices (``free``, ``i3d``'s features, their δ) use all seven
  training sources (round 3; round 2 used the three below, and what won there lost on other
  domains: a rule written after round 2's test numbers were seen, so round 3's are not an
  untouched estimate, said so in the docs). The trained grids (epochs, fusion weight), which
  cost a training per source, use three fixed sources: the first three of
  :data:`VALIDATION_ORDER` that are not the test source (the largest sources whose classes no
  other source names). A choice maximises the mean over the sources of (P@5 + mAP) / 2; ties go
  to the simpler candidate (earlier in the grid). Grids run on seed 0; the final models on 3
  seeds (both reductions the issue allows, to fit 45 minutes on 2 cores).
- **Models reported** (all through this project's code: feature cache, ``TemporalHead``,
  ``CNNLSTM``'s training step, ``Whitening``, ``score_rows``, ``select_delta``):
  ``baseline`` (no training: the mean of 16 ImageNet Lite0 frame features); ``i3d`` (the
  Kinetics-400 I3D alone, as ``model=i3d``: logits, pooled or both, chosen on validation);
  ``free`` (the best training-free embedding of :data:`FREE_GRID`: Lite0 statistics ⊕ v · I3D,
  PCA-whitened on the training sources without labels, chosen on validation); ``default``
  (``free`` ⊕ w · the learned LSTM part trained with labels on the training sources, w and the
  epochs chosen on validation; w = 0 is ``free`` itself); ``cnn_lstm_paper`` (the paper's
  model: the LSTM embedding alone, no centring, epochs chosen on validation).
- **δ** of each model: ``select_delta`` (δ = auto, with its headroom) on the PAR rows of the
  three validation sources, averaged.
- **Reported:** per fold; the mean; the mean over folds not at the ceiling (the baseline's
  P@5 already the best possible); the mean over *unseen* folds not at the ceiling
  (``fight-cctv`` and ``hockey_fights`` name the same classes, so each is "seen in another
  domain" and kept apart); and the queries of Kinetics-unseen classes
  (``configs/data/class_map/real_clips.yaml``) apart, since I3D was trained on the others.

Usage (``make real-benchmark``)::

    PYTHONPATH=src .venv/bin/python benchmarks/real_benchmark.py [--seeds 3] [--out DIR]

Lite0 frame features and I3D clip features are computed once into ``.cache/features``
(shared by folds, seeds and later runs: a second run re-embeds nothing); the rest is small
heads on them. ``--learning-curve`` and ``--objectives`` are separate commands.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from media_retrieval.config.paths import real_clips_dir  # noqa: E402
from media_retrieval.data.discovery import MediaItem  # noqa: E402
from media_retrieval.data.folds import Fold, leave_one_source_out  # noqa: E402

SETS = (
    "ucf101-mini",
    "gestures-mini",
    "fight-cctv",
    "exercise-typing",
    "egogestar_pointing",
    "hockey_fights",
    "jhmdb",
    "ut_interaction",
)
#: the first four: the sets of round 1 (``--synthetic`` reproduces its experiment on them)
ROUND1 = SETS[:4]
#: inner validation sources, in order of preference: the fold takes the first three but its test
VALIDATION_ORDER = ("jhmdb", "ut_interaction", "egogestar_pointing", "exercise-typing")
N_VALIDATION = 3
CLASS_MAP = ROOT / "src" / "media_retrieval" / "configs" / "data" / "class_map" / "real_clips.yaml"
K = 5
DELTAS = [round(0.05 * i, 2) for i in range(0, 20)]  # 0.0 .. 0.95
EPOCHS = (5, 10)  # 1 000+ training clips: 10 epochs are as many steps as 30 were at 4 sources
WEIGHTS = (0.0, 0.25, 0.5, 1.0)  # of the learned part
I3D_VARIANTS = ("logits", "pooled", "both")
I3D_WEIGHTS = (0.5, 1.0, 2.0)  # v: the I3D part's weight beside the unit-norm Lite0 statistics
WHITEN = (None, 128, 256)  # PCA-whitening dimensions tried (None: no whitening)
TEMPORAL = {"cell": "lstm", "hidden": 256, "center": True}
PAPER_TEMPORAL = {"cell": "lstm", "hidden": 256, "center": False}
FUSED_STATS = ["mean", "std"]
log = logging.getLogger("real_benchmark")


@dataclass(frozen=True)
class Embedding:
    """A training-free clip embedding: the Lite0 part (``mean``: the raw mean of the frame
    features, the baseline; ``mean_std``: L2-normalised mean ⊕ std, one unit block; ``none``)
    ⊕ ``v`` · the I3D part (``logits``, ``pooled`` or ``both``, as ``model=i3d`` embeds), then
    PCA whitening to ``whiten`` dimensions fitted on the training sources (no labels)."""

    lite0: str = "mean"
    i3d: str | None = None
    v: float = 1.0
    whiten: int | None = None

    @property
    def name(self) -> str:
        parts = [] if self.lite0 == "none" else [f"lite0_{self.lite0}"]
        if self.i3d:
            parts.append(f"i3d_{self.i3d}" + (f"@{self.v:g}" if self.lite0 != "none" else ""))
        return "+".join(parts) + (f", whitened to {self.whiten}" if self.whiten else "")


BASELINE = Embedding("mean")
#: every training-free candidate, simplest first (ties go to the earlier)
FREE_GRID = (
    [BASELINE]
    + [Embedding("mean_std", whiten=d) for d in WHITEN]
    + [Embedding("none", var, 1.0, d) for var in I3D_VARIANTS for d in WHITEN]
    + [
        Embedding("mean_std", var, v, d)
        for var in I3D_VARIANTS
        for v in I3D_WEIGHTS
        for d in WHITEN
    ]
)
#: the I3D model alone (``model=i3d``: no whitening), its ``features`` chosen on validation
I3D_GRID = [Embedding("none", var) for var in I3D_VARIANTS]


@dataclass
class Data:
    """Everything a fold reads: the clips per source, their Lite0 frame features (16, 1280),
    I3D clip features (1424,), sibling groups and whether their class is a Kinetics class."""

    sources: dict[str, list[MediaItem]]
    feats: dict[str, np.ndarray]
    clip: dict[str, np.ndarray]
    group: dict[str, str]
    kinetics: dict[str, bool]
    #: work a run repeats (trainings, whitening fits), remembered with the data it was done on
    memo: dict = field(default_factory=dict, repr=False)


def sibling_group(item: MediaItem) -> str:
    """Clips cut from one source video share a group (JHMDB: the prefix before ``_<class>_``)."""
    name = Path(item.path).stem
    if item.dataset == "jhmdb":
        m = re.match(rf"(.+)_{re.escape(item.label)}_", name)
        return f"jhmdb/{m.group(1) if m else name}"
    return item.path


def kinetics_classes() -> dict[str, set[str]]:
    """{set: its classes that are Kinetics-400 classes}, from the reviewed class map."""
    section = yaml.safe_load(CLASS_MAP.read_text())["kinetics400"]
    return {s: set(classes or {}) for s, classes in section.items()}


# ---------------------------------------------------------------------------- data
def real_datamodule(roots: dict[str, Path], cache_dir: Path, dense_frames: int | None = None):
    """The data module both encoders read the sets through: 16 frames by index, 224 px stretched,
    whole clips; the same settings give both caches the keys earlier runs filled."""
    from media_retrieval.data.clips import ClipSpec
    from media_retrieval.data.datasets import FolderDataModule

    return FolderDataModule(
        roots={s: str(r) for s, r in roots.items()},
        clip=ClipSpec(frames=16, image_size=224, resize="stretch", sampling="index", chunk_s=None),
        cache_dir=str(cache_dir),
        num_workers=1,
        dedupe=False,
        kinds=["video"],
        feature_batch_size=1,
        dense_frames=dense_frames,
    )


def load_sources(
    real_dir: Path,
    cache_dir: Path,
    dense_frames: int | None = None,
    roots: dict[str, Path] | None = None,
    clip_encoder: bool = False,
) -> tuple[dict[str, list[MediaItem]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The clips of each set, their (16, 1280) frame features (``dense_frames``: that many per
    clip instead, for self-supervised views) and, with ``clip_encoder``, their I3D (Kinetics-400)
    clip features: logits ⊕ pooled Mixed_5c, (1424,) each, raw, from the same 16x224 clips scaled
    to [-1, 1] as I3D expects (the cache key names the weights' hash). Computed once into the
    cache; with both encoders each clip is decoded once for the two (``build_caches``).
    ``roots``: other class-per-folder sets instead of the eight real ones."""
    from media_retrieval.models.backbones import create_backbone
    from media_retrieval.models.i3d import I3DFeatures

    roots = roots or {s: real_dir / s for s in SETS}
    dm = real_datamodule(roots, cache_dir, dense_frames)
    backbone = create_backbone("efficientnet_lite0", "imagenet")
    dm.attach_frame_encoder(backbone, backbone.spec())
    if clip_encoder:
        encoder = I3DFeatures()
        dm.attach_clip_encoder(encoder, encoder.spec())  # as training a model with model.video
    dm.prepare_data()
    caches = [c for c in (dm.cache, dm.clip_cache) if c is not None]
    bad = {k: v for c in caches for k, v in c.skipped().items()}
    sources: dict[str, list[MediaItem]] = {s: [] for s in roots}
    feats: dict[str, np.ndarray] = {}
    clip: dict[str, np.ndarray] = {}
    for it in dm.items():
        key = dm.content_key(it)
        if key in bad or any(key not in c for c in caches):
            log.warning("skipping %s: %s", it.path, bad.get(key, "no features"))
            continue
        sources[it.dataset].append(it)
        feats[it.key] = np.asarray(dm.cache.get(key), dtype=np.float32)
        if dm.clip_cache is not None:
            clip[it.key] = np.asarray(dm.clip_cache.get(key), dtype=np.float32)
    return sources, feats, clip


def load_data(real_dir: Path, cache_dir: Path) -> Data:
    """Both feature caches (built where missing, one decode per clip) for the eight sets; a clip
    either encoder could not read is left out of both, with a logged line."""
    sources, feats, clip = load_sources(real_dir, cache_dir, clip_encoder=True)
    kin = kinetics_classes()
    items = [it for v in sources.values() for it in v]
    return Data(
        sources,
        feats,
        clip,
        {it.key: sibling_group(it) for it in items},
        {it.key: it.label in kin.get(it.dataset, set()) for it in items},
    )


def stack(items: list[MediaItem], feats: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([feats[it.key] for it in items]))


# ---------------------------------------------------------------------------- scoring
def score(
    vectors: torch.Tensor, items: list[MediaItem], data: Data | None = None, kinetics: bool = False
) -> list[dict]:
    """Leave-one-out result rows (every clip a query against all the others but its siblings),
    unseen classes; with ``kinetics``, the first row also carries P@5 and mAP of the queries
    whose class is not a Kinetics-400 class (``p_at_5_kinetics_unseen``,
    ``map_kinetics_unseen``)."""
    from media_retrieval.retrieval.evaluate import EmbeddingSet, rank, score_rows

    names = sorted({it.label for it in items})
    labels = np.array([names.index(it.label) for it in items])
    n = len(items)
    groups = np.array([data.group[it.key] for it in items]) if data is not None else None
    emb = EmbeddingSet(
        ids=np.arange(n),
        vectors=vectors.float(),
        labels=labels,
        seen=np.zeros(n, bool),
        is_query=np.ones(n, bool),
        is_gallery=np.ones(n, bool),
        groups=groups,
    )
    ranked = rank(emb, K, exclude_same_group=groups is not None)
    rows = score_rows(emb, [K], delta=0.8, deltas=DELTAS, rankings=ranked)
    if kinetics and data is not None:
        unseen = ~np.array([data.kinetics[items[i].key] for i in ranked.query_rows])
        p5 = (ranked.topk_labels[:, :K] == labels[ranked.query_rows][:, None]).mean(1)
        extra = {
            "n_kinetics_unseen": int(unseen.sum()),
            "p_at_5_kinetics_unseen": float(p5[unseen].mean()) if unseen.any() else float("nan"),
            "map_kinetics_unseen": float(ranked.ap[unseen].mean())
            if unseen.any()
            else float("nan"),
        }
        rows = [{**rows[0], **extra}, *rows[1:]]
    return rows


def pick(rows: list[dict], ranking: str, delta: float | None = None) -> dict:
    for r in rows:
        if (
            r["ranking"] == ranking
            and r["split"] == "all"
            and r["dataset"] == "all"
            and r["k"] == K
            and (delta is None or abs(r["delta"] - delta) < 1e-9)
        ):
            return r
    raise KeyError((ranking, delta))


def quality(rows: list[dict]) -> float:
    """What validation maximises: the mean of P@5 and mAP."""
    eu = pick(rows, "euclidean")
    return (eu["accuracy"] + eu["map"]) / 2


def mean_quality(row_sets: list[list[dict]]) -> float:
    return float(np.mean([quality(r) for r in row_sets]))


def averaged_par_rows(row_sets: list[list[dict]]) -> list[dict]:
    """PAR rows averaged over several validation sources (what ``select_delta`` then reads)."""
    out = [
        {
            **pick(row_sets[0], "euclidean"),
            "mean_kept": float(
                np.mean([pick(rows, "euclidean")["mean_kept"] for rows in row_sets])
            ),
        }
    ]
    for d in DELTAS:
        rs = [pick(rows, "par", d) for rows in row_sets]
        acc = [r["accuracy"] for r in rs if not math.isnan(r["accuracy"])]
        out.append(
            {
                "ranking": "par",
                "split": "all",
                "dataset": "all",
                "k": K,
                "delta": d,
                "accuracy": float(np.mean(acc)) if acc else float("nan"),
                "empty_share": float(np.mean([r["empty_share"] for r in rs])),
                "mean_kept": float(np.mean([r["mean_kept"] for r in rs])),
            }
        )
    return out


def choose_delta(row_sets: list[list[dict]]) -> float:
    """δ = auto on the validation sources' rows (``select_delta``, its headroom included)."""
    from media_retrieval.retrieval.par import select_delta

    d = select_delta(averaged_par_rows(row_sets), K)
    return 0.0 if d is None else d  # none qualifies: the most permissive δ of the grid


# ---------------------------------------------------------------------------- models
@dataclass
class Trained:
    """Temporal-head weights after each epoch of ``EPOCHS``."""

    snapshots: dict[int, dict[str, torch.Tensor]]
    temporal: dict


class ViewData(torch.utils.data.Dataset):
    """Training clips with two random views cut from dense features, by the DataModule's own
    view code (``data.dense_frames``)."""

    def __init__(
        self, items: list[MediaItem], dense: dict[str, np.ndarray], targets: torch.Tensor
    ) -> None:
        from media_retrieval.data.clips import ClipSpec
        from media_retrieval.data.datamodule import VideoRetrievalDataModule

        self.items, self.dense, self.targets = items, dense, targets
        self.dm = VideoRetrievalDataModule(
            clip=ClipSpec(frames=16), dense_frames=next(iter(dense.values())).shape[0]
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        views = self.dm._views(torch.from_numpy(self.dense[self.items[i].key]), train=True)
        return {**views, "target": self.targets[i], "sample_id": i}


def train(
    items: list[MediaItem],
    feats: dict[str, np.ndarray],
    seed: int,
    temporal: dict | None = None,
    loss: dict | None = None,
    dense: dict[str, np.ndarray] | None = None,
    epochs: tuple[int, ...] | None = None,
    memo: dict | None = None,
) -> Trained:
    """``CNNLSTM``'s training step (the objective, cross-entropy unless ``loss`` says, trains the
    learned part alone, so one run serves every fusion weight) on cached features (``dense``:
    two views per clip for InfoNCE); the temporal head is snapshotted after each epoch in
    ``epochs`` (default ``EPOCHS``: a final model trains just to the epochs validation chose;
    with no schedule, that is the same model as the snapshot of a longer run).

    ``memo`` (``Data.memo``) remembers trainings: fold A validating on source B trains on exactly
    the clips fold B validating on A does (every source but the two), so half the validation
    trainings of the four folds whose test source is a validation source repeat."""
    epochs = tuple(epochs or EPOCHS)
    key = (
        "train",
        tuple(it.key for it in items),
        seed,
        json.dumps(temporal, sort_keys=True),
        json.dumps(loss, sort_keys=True),
        dense is not None,
        epochs,
    )
    if memo is not None and key in memo:
        return memo[key]
    import lightning as L

    from media_retrieval.models import CNNLSTM

    temporal = temporal or TEMPORAL
    classes = sorted({it.label for it in items})
    L.seed_everything(seed, workers=True, verbose=False)
    model = CNNLSTM(
        backbone={"name": "efficientnet_lite0", "weights": "none"},
        temporal=dict(temporal),
        num_classes=len(classes),
        lr=1e-3,
        loss=loss,
    )
    y = torch.tensor([classes.index(it.label) for it in items])
    if dense is not None:
        data = ViewData(items, dense, y)
    else:
        x = stack(items, feats)
        data = [{"features": x[i], "target": y[i], "sample_id": i} for i in range(len(items))]
    sampler = None
    if loss and loss.get("name") in (
        "supcon",
        "triplet",
    ):  # metric losses want several clips per class
        from pytorch_metric_learning.samplers import MPerClassSampler

        sampler = MPerClassSampler(
            y.tolist(), 8, batch_size=32, length_before_new_iter=max(len(items) // 32, 1) * 32
        )
    loader = torch.utils.data.DataLoader(
        data, batch_size=32, shuffle=sampler is None, sampler=sampler
    )
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.current_epoch + 1 in epochs:
                snapshots[trainer.current_epoch + 1] = copy.deepcopy(
                    pl_module.temporal.state_dict()
                )

    trainer = L.Trainer(
        max_epochs=max(epochs),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Snapshot()],
    )
    trainer.fit(model, loader)
    out = Trained(snapshots, dict(temporal))
    if memo is not None:
        memo[key] = out
    return out


def head(
    stats: list[str],
    cell: str = "lstm",
    state: dict | None = None,
    weight: float = 1.0,
    in_dim: int = 1280,
    temporal: dict | None = None,
):
    from media_retrieval.models.temporal import TemporalHead

    h = TemporalHead(
        in_dim, **{**(temporal or TEMPORAL), "cell": cell, "stats": stats, "fusion_weight": weight}
    ).eval()
    if state is not None:
        h.load_state_dict({k: v for k, v in state.items() if k != "fusion_weight"}, strict=False)
        if h.fused:
            h.fusion_weight.fill_(weight)
    return h


@torch.no_grad()
def embed(h, items: list[MediaItem], feats: dict[str, np.ndarray]) -> torch.Tensor:
    return h(stack(items, feats))


def whitened(train_z: torch.Tensor, z: torch.Tensor, dim: int | None) -> torch.Tensor:
    """``z`` through the model's ``Whitening`` fitted on ``train_z`` (identity for None)."""
    return whitened_dims(train_z, [z], [dim])[dim][0]


def whitened_dims(
    train_z: torch.Tensor,
    zs: list[torch.Tensor],
    dims,
    memo: tuple[dict, tuple] | None = None,
) -> dict[int | None, list[torch.Tensor]]:
    """``zs`` through the model's ``Whitening`` fitted on ``train_z`` for each of ``dims`` (None:
    unchanged). One fit at the largest dimension serves all: a smaller ``Whitening`` keeps the
    leading columns of the same projection, exactly what fitting it alone gives. ``memo``: where to
    remember the fit and a key naming ``train_z`` (embedding, clips), so validation pairs that
    share their inner training set (fold A holding out B, fold B holding out A) fit once."""
    from media_retrieval.models.whitening import Whitening

    out: dict[int | None, list[torch.Tensor]] = {None: zs} if None in dims else {}
    sized = sorted({d for d in dims if d is not None})
    if sized:
        store, key = memo if memo is not None else ({}, ())
        key = ("whitening", *key, sized[-1])
        big = store.get(key)
        if big is None:
            big = Whitening(train_z.shape[1], sized[-1])
            big.fit(train_z)
            store[key] = big
        for d in sized:
            w = Whitening(train_z.shape[1], d)
            w.mean.copy_(big.mean)
            w.proj.copy_(big.proj[:, : w.dim])
            w.fitted.fill_(True)
            out[d] = [w(z) for z in zs]
    return out


def i3d_part(items: list[MediaItem], data: Data, variant: str) -> torch.Tensor:
    """I3D's embedding as ``model=i3d model.features=<variant>`` computes it from the cached row."""
    from media_retrieval.models.i3d import i3d_embedding

    return i3d_embedding(torch.from_numpy(np.stack([data.clip[it.key] for it in items])), variant)


def free_vectors(e: Embedding, items: list[MediaItem], data: Data) -> torch.Tensor:
    """The embedding ``e`` before whitening."""
    parts = []
    if e.lite0 == "mean":
        parts.append(embed(head([], "none"), items, data.feats))
    elif e.lite0 == "mean_std":
        parts.append(embed(head(FUSED_STATS, "none"), items, data.feats))
    if e.i3d:
        parts.append(e.v * i3d_part(items, data, e.i3d))
    return torch.cat(parts, dim=1)


def learned_vectors(
    state: dict, items: list[MediaItem], data: Data, temporal: dict
) -> torch.Tensor:
    """The trained LSTM readout (the learned part; the paper model's embedding)."""
    return embed(head([], state=state, temporal=temporal), items, data.feats)


def fused(free_z: torch.Tensor, learned_z: torch.Tensor, w: float) -> torch.Tensor:
    """``free ⊕ w · n(learned)``, as ``TemporalHead`` fuses (w = 0: the free embedding itself)."""
    if w == 0:
        return free_z
    return torch.cat([free_z, w * torch.nn.functional.normalize(learned_z, dim=-1)], dim=-1)


# ---------------------------------------------------------------------------- one fold
def held_out(
    fold: Fold, data: Data, held: list[str]
) -> list[tuple[str, list[MediaItem], list[MediaItem]]]:
    """(held-out source, inner training clips, held-out clips) for each of ``held``: the source
    left out, the fold's other training sources as the inner training set."""
    return [
        (h, [it for s in fold.train if s != h for it in data.sources[s]], data.sources[h])
        for h in held
    ]


def validation_sets(fold: Fold, data: Data) -> list[tuple[str, list[MediaItem], list[MediaItem]]]:
    """The fold's three fixed validation sources (what the trained grids are chosen on)."""
    held = [s for s in VALIDATION_ORDER if s != fold.test and s in fold.train][:N_VALIDATION]
    return held_out(fold, data, held)


def every_source_validation(
    fold: Fold, data: Data
) -> list[tuple[str, list[MediaItem], list[MediaItem]]]:
    """Every training source of the fold held out in turn: what the training-free choices are
    made on since round 3. Round 2 made them on the three fixed sources and what won there lost
    on other domains (whitened logits on `gestures-mini`, the Lite0 fusion on `ut_interaction`);
    these candidates need no training, so validating them on all seven domains costs seconds,
    not trainings."""
    return held_out(fold, data, list(fold.train))


def choose(grid: list, scores: dict) -> tuple:
    """The candidate with the best mean validation quality; ties: the earliest in ``grid``."""
    return max(grid, key=lambda c: (mean_quality(scores[c]), -grid.index(c)))


def free_validation(val: list, data: Data) -> dict[Embedding, list[list[dict]]]:
    """Validation rows of every training-free candidate (whitening fitted on the inner training
    clips, no labels), one list per validation source."""
    scores: dict[Embedding, list[list[dict]]] = {}
    for base in dict.fromkeys(Embedding(e.lite0, e.i3d, e.v) for e in FREE_GRID):
        dims = [
            e.whiten for e in FREE_GRID if (e.lite0, e.i3d, e.v) == (base.lite0, base.i3d, base.v)
        ]
        for _, inner, held in val:
            zs = whitened_dims(
                free_vectors(base, inner, data),
                [free_vectors(base, held, data)],
                dims,
                memo=(data.memo, (base, tuple(it.key for it in inner))),
            )
            for d in dims:
                scores.setdefault(Embedding(base.lite0, base.i3d, base.v, d), []).append(
                    score(zs[d][0], held, data)
                )
    return scores


def run_fold(fold: Fold, data: Data, seeds: list[int]) -> list[dict]:
    val = validation_sets(fold, data)
    train_items, test_items = fold.items(data.sources, "train"), fold.items(data.sources, "test")
    out = []
    log.info(
        "fold %s: training-free choices on all %d training sources, trained grids on %s",
        fold.test,
        len(fold.train),
        [h for h, _, _ in val],
    )

    scores = free_validation(every_source_validation(fold, data), data)
    free = choose(FREE_GRID, scores)
    chosen = {"baseline": BASELINE, "i3d": choose(I3D_GRID, scores), "free": free}
    for name, e in chosen.items():
        z = whitened(
            free_vectors(e, train_items, data), free_vectors(e, test_items, data), e.whiten
        )
        out.append(
            result_row(
                fold,
                name,
                "none",
                z,
                test_items,
                data,
                choose_delta(scores[e]),
                {"embedding": e.name, "val_quality": mean_quality(scores[e])},
            )
        )
        log.info(
            "%s %s (%s): P@5 %.3f mAP %.3f",
            fold.test,
            name,
            e.name,
            out[-1]["p_at_5"],
            out[-1]["map"],
        )

    # trained: the learned part on top of the chosen free embedding (default), and alone (paper)
    for name, temporal in (("default", TEMPORAL), ("cnn_lstm_paper", PAPER_TEMPORAL)):
        grid = [(e, w) for e in EPOCHS for w in (WEIGHTS if name == "default" else (None,))]
        val_rows: dict[tuple, list[list[dict]]] = {}
        for _, inner, held in val:  # grids on seed 0
            f_inner, f_held = free_vectors(free, inner, data), free_vectors(free, held, data)
            for epochs, state in train(
                inner, data.feats, 0, temporal, memo=data.memo
            ).snapshots.items():
                l_inner = learned_vectors(state, inner, data, temporal)
                l_held = learned_vectors(state, held, data, temporal)
                for w in WEIGHTS if name == "default" else (None,):
                    if w is None:
                        z = l_held
                    else:
                        z = whitened(
                            fused(f_inner, l_inner, w), fused(f_held, l_held, w), free.whiten
                        )
                    val_rows.setdefault((epochs, w), []).append(score(z, held, data))
        # ties: the smaller weight (w = 0 is the free embedding), then fewer epochs
        grid.sort(key=lambda ew: (ew[1] or 0, ew[0]))
        epochs, w = choose(grid, val_rows)
        delta = choose_delta(val_rows[(epochs, w)])
        f_train, f_test = (
            free_vectors(free, train_items, data),
            free_vectors(free, test_items, data),
        )
        for seed in seeds:
            state = train(train_items, data.feats, seed, temporal, epochs=(epochs,)).snapshots[
                epochs
            ]
            l_train = learned_vectors(state, train_items, data, temporal)
            l_test = learned_vectors(state, test_items, data, temporal)
            z = (
                l_test
                if w is None
                else whitened(fused(f_train, l_train, w), fused(f_test, l_test, w), free.whiten)
            )
            out.append(
                result_row(
                    fold,
                    name,
                    seed,
                    z,
                    test_items,
                    data,
                    delta,
                    {
                        "epochs": epochs,
                        "fusion_weight": w,
                        "embedding": free.name if w is not None else "lstm",
                        "val_quality": mean_quality(val_rows[(epochs, w)]),
                    },
                )
            )
            log.info(
                "%s %s seed %d: epochs %d, w %s, δ %.2f -> P@5 %.3f mAP %.3f",
                fold.test,
                name,
                seed,
                epochs,
                w,
                delta,
                out[-1]["p_at_5"],
                out[-1]["map"],
            )
    return out


def result_row(
    fold: Fold,
    model: str,
    seed,
    z: torch.Tensor,
    items: list[MediaItem],
    data: Data,
    delta: float,
    chosen: dict,
) -> dict:
    rows = score(z, items, data, kinetics=True)
    eu, par = pick(rows, "euclidean"), pick(rows, "par", delta)
    return {
        "fold": fold.test,
        "model": model,
        "seed": seed,
        "seen_elsewhere": sorted(fold.seen_elsewhere),
        "p_at_5": eu["accuracy"],
        "map": eu["map"],
        "f1": eu["f1"],
        "par_accuracy_at_5": par["accuracy"],
        "par_f1": par["f1"],
        "par_mean_kept": par["mean_kept"],
        "par_empty_share": par["empty_share"],
        "delta": delta,
        "p_at_5_kinetics_unseen": rows[0]["p_at_5_kinetics_unseen"],
        "map_kinetics_unseen": rows[0]["map_kinetics_unseen"],
        "n_kinetics_unseen": rows[0]["n_kinetics_unseen"],
        "n_clips": len(items),
        **chosen,
    }


# ---------------------------------------------------------------------------- report
METRICS = (
    "p_at_5",
    "map",
    "f1",
    "par_accuracy_at_5",
    "par_f1",
    "par_mean_kept",
    "par_empty_share",
    "delta",
    "p_at_5_kinetics_unseen",
    "map_kinetics_unseen",
)
GROUPS = ("mean", "mean_not_at_ceiling", "mean_unseen_not_at_ceiling")


def _mean(vals: list[float]) -> float:
    vals = [v for v in vals if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else float("nan")


def summarise(rows: list[dict], ceilings: dict[str, float]) -> list[dict]:
    """Per (fold, model) a ``mean`` row with the seed spread (std); then per model the means
    over all folds, over folds not at the ceiling, and over unseen folds not at the ceiling."""
    out = []
    folds = sorted({r["fold"] for r in rows}, key=SETS.index)
    models = list(dict.fromkeys(r["model"] for r in rows))
    for fold in folds:
        base = next(r for r in rows if r["fold"] == fold and r["model"] == "baseline")
        for model in models:
            rs = [r for r in rows if r["fold"] == fold and r["model"] == model]
            m = {
                "fold": fold,
                "model": model,
                "seed": "mean",
                "n_seeds": len(rs),
                "seen_elsewhere": bool(rs[0]["seen_elsewhere"]),
                "at_ceiling": base["p_at_5"] >= ceilings[fold] - 1e-6,
            }
            for key in METRICS:
                m[key] = _mean([r[key] for r in rs])
                m[f"{key}_std"] = float(np.std([r[key] for r in rs]))
            out.append(m)
    for model in models:
        ms = [m for m in out if m["model"] == model and m["fold"] in folds]
        for name in GROUPS:
            group = [
                m
                for m in ms
                if (name == "mean" or not m["at_ceiling"])
                and (name != "mean_unseen_not_at_ceiling" or not m["seen_elsewhere"])
            ]
            if group:
                out.append(
                    {
                        "fold": name,
                        "model": model,
                        "seed": "mean",
                        "n_folds": len(group),
                        **{k: _mean([m[k] for m in group]) for k in METRICS},
                        **{f"{k}_std": _mean([m[f"{k}_std"] for m in group]) for k in METRICS},
                    }
                )
    return out


def write_outputs(out_dir: Path, rows: list[dict], summary: list[dict], meta: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "real_benchmark.json").write_text(
        json.dumps({"meta": meta, "rows": rows + summary}, indent=1)
    )
    cols = (
        "fold",
        "model",
        "P@5",
        "mAP",
        "P@5 / mAP Kinetics-unseen",
        "F1 Eu / PAR",
        "PAR acc@5",
        "kept",
        "empty",
        "δ",
    )
    table = Table(title="Real footage, leave-one-source-out over eight sources (mean ± seed std)")
    for col in cols:
        table.add_column(col, justify="left" if col in ("fold", "model") else "right")
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for m in summary:
        fold = (
            m["fold"]
            + (" (ceiling)" if m.get("at_ceiling") else "")
            + (" (seen elsewhere)" if m.get("seen_elsewhere") else "")
        )
        cells = [
            f"{m['p_at_5']:.3f} ± {m['p_at_5_std']:.3f}",
            f"{m['map']:.3f} ± {m['map_std']:.3f}",
            f"{m['p_at_5_kinetics_unseen']:.3f} / {m['map_kinetics_unseen']:.3f}",
            f"{m['f1']:.3f} / {m['par_f1']:.3f}",
            f"{m['par_accuracy_at_5']:.3f}",
            f"{m['par_mean_kept']:.2f}",
            f"{m['par_empty_share']:.3f}",
            f"{m['delta']:.2f}",
        ]
        table.add_row(fold, m["model"], *cells)
        lines.append(f"| {fold} | {m['model']} | " + " | ".join(cells) + " |")
    Console(width=170).print(table)
    chosen = sorted(
        {
            (r["fold"], r["model"], r.get("embedding", ""), r.get("epochs"), r.get("fusion_weight"))
            for r in rows
        },
        key=lambda t: (SETS.index(t[0]), t[1]),
    )
    choice_lines = ["| fold | model | embedding | epochs | w |", "|---|---|---|---|---|"] + [
        f"| {f} | {m} | {e} | {ep if ep is not None else ''} | {w if w is not None else ''} |"
        for f, m, e, ep, w in chosen
    ]
    (out_dir / "real_benchmark.md").write_text(
        "# Real footage: leave-one-source-out over eight sources\n\n" + "\n".join(lines) + "\n\n"
        "## Chosen on validation\n\n" + "\n".join(choice_lines) + "\n\n"
        f"Command: `{meta['command']}` ({meta['seconds']:.0f} s, {meta['machine']}, commit "
        f"{meta['commit']}).\n"
    )
    bar_chart(summary, out_dir / "real_benchmark.png")


def bar_chart(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = [f for f in dict.fromkeys(m["fold"] for m in summary) if f not in GROUPS[1:]]
    models = list(dict.fromkeys(m["model"] for m in summary))
    fig, axes = plt.subplots(2, 1, figsize=(13, 7), sharex=True)
    for ax, key, title in ((axes[0], "p_at_5", "P@5"), (axes[1], "map", "mAP")):
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            vals = [
                next(m[key] for m in summary if m["fold"] == f and m["model"] == model)
                for f in folds
            ]
            errs = [
                next(m[f"{key}_std"] for m in summary if m["fold"] == f and m["model"] == model)
                for f in folds
            ]
            ax.bar(
                np.arange(len(folds)) + i * width, vals, width, yerr=errs, label=model, capsize=2
            )
        ax.set_ylabel(title)
        ax.set_ylim(0, 1)
        ax.set_title(f"{title}: test source (its classes unseen in training)", fontsize=10)
    axes[1].set_xticks(np.arange(len(folds)) + 0.4 - width / 2, folds, rotation=15)
    axes[0].legend(fontsize=8, ncol=len(models))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- separate commands
def default_parts(fold: Fold, data: Data) -> Embedding:
    """The training-free part of the fold's default, chosen on its validation sources as in
    :func:`run_fold` (without scoring the test source)."""
    return choose(FREE_GRID, free_validation(every_source_validation(fold, data), data))


def open_folds(data: Data) -> list[Fold]:
    """The unseen folds not at the ceiling (what the separate commands measure on)."""
    out = []
    for fold in leave_one_source_out(data.sources, allow_shared=True):
        test_items = fold.items(data.sources, "test")
        base = pick(score(free_vectors(BASELINE, test_items, data), test_items, data), "euclidean")
        if not fold.seen_elsewhere and base["accuracy"] < ceiling_of(test_items) - 1e-6:
            out.append(fold)
    return out


def learning_curve(
    data: Data, seeds: list[int], out_dir: Path, subsets: int = 5, w: float = 0.25, epochs: int = 10
) -> list[dict]:
    """Gain over the baseline as the training sources grow (1 .. 7, at most ``subsets`` sampled
    subsets per size), on the unseen folds not at the ceiling: the training-free part of the
    fold's default (whitening fitted on the subset) and the trained default (that part ⊕ w ·
    the learned part, fixed ``w`` and ``epochs``: a curve, not a choice; 0.25 is the weight
    validation chose most often in round 2)."""
    rows = []
    for fold in open_folds(data):
        free = default_parts(fold, data)
        test_items = fold.items(data.sources, "test")
        base = pick(score(free_vectors(BASELINE, test_items, data), test_items, data), "euclidean")
        rng = random.Random(f"{fold.test}")
        for n in range(1, len(fold.train) + 1):
            combos = list(itertools.combinations(fold.train, n))
            for subset in rng.sample(combos, subsets) if len(combos) > subsets else combos:
                items = [it for s in subset for it in data.sources[s]]
                f_items, f_test = (
                    free_vectors(free, items, data),
                    free_vectors(free, test_items, data),
                )
                lf = pick(
                    score(whitened(f_items, f_test, free.whiten), test_items, data), "euclidean"
                )
                for seed in seeds:
                    state = train(items, data.feats, seed).snapshots[epochs]
                    l_items = learned_vectors(state, items, data, TEMPORAL)
                    l_test = learned_vectors(state, test_items, data, TEMPORAL)
                    z = whitened(fused(f_items, l_items, w), fused(f_test, l_test, w), free.whiten)
                    eu = pick(score(z, test_items, data), "euclidean")
                    rows.append(
                        {
                            "fold": fold.test,
                            "n_sources": n,
                            "sources": list(subset),
                            "seed": seed,
                            "gain_p_at_5": eu["accuracy"] - base["accuracy"],
                            "gain_map": eu["map"] - base["map"],
                            "label_free_gain_p_at_5": lf["accuracy"] - base["accuracy"],
                            "label_free_gain_map": lf["map"] - base["map"],
                        }
                    )
                log.info(
                    "curve %s %s: trained %+.3f P@5 / %+.3f mAP; training-free %+.3f / %+.3f",
                    fold.test,
                    subset,
                    rows[-1]["gain_p_at_5"],
                    rows[-1]["gain_map"],
                    rows[-1]["label_free_gain_p_at_5"],
                    rows[-1]["label_free_gain_map"],
                )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "learning_curve.json").write_text(json.dumps(rows, indent=1))
    curve_plot(rows, out_dir / "learning_curve.png")
    lines = [
        "| training sources | subsets x folds | trained: gain P@5 / mAP | training-free part: gain "
        "P@5 / mAP |",
        "|---|---|---|---|",
    ]
    for n in sorted({r["n_sources"] for r in rows}):
        rs = [r for r in rows if r["n_sources"] == n]
        m = {
            k: float(np.mean([r[k] for r in rs]))
            for k in ("gain_p_at_5", "gain_map", "label_free_gain_p_at_5", "label_free_gain_map")
        }
        lines.append(
            f"| {n} | {len(rs)} | {m['gain_p_at_5']:+.3f} / {m['gain_map']:+.3f} | "
            f"{m['label_free_gain_p_at_5']:+.3f} / {m['label_free_gain_map']:+.3f} |"
        )
    (out_dir / "learning_curve.md").write_text(
        "# Learning curve (unseen folds not at the ceiling; gain over Lite0)\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print("\n".join(lines))
    return rows


OBJECTIVES = {
    "ce": {"name": "ce"},
    "supcon": {"name": "supcon", "temperature": 0.1},
    "triplet": {"name": "triplet", "margin": 0.1},
    "infonce": {"name": "infonce", "temperature": 0.1},
}
DENSE_FRAMES = 32


def objectives(
    data: Data, dense: dict, seeds: list[int], out_dir: Path, w: float = 0.25
) -> list[dict]:
    """The default (the fold's training-free part ⊕ w · the learned part) with the learned part
    trained by each objective of :data:`OBJECTIVES`, on the unseen folds not at the ceiling
    (``w`` fixed as in the learning curve: 0.25, the weight validation chose most often).
    Epochs (``EPOCHS``: 5 or 10) are chosen on the fold's validation sources by P@5 and mAP
    (InfoNCE never sees a label in training; its epochs are still chosen on labelled
    validation, as every model's δ is)."""
    rows = []
    for fold in open_folds(data):
        free = default_parts(fold, data)
        val = validation_sets(fold, data)
        test_items, train_items = (
            fold.items(data.sources, "test"),
            fold.items(data.sources, "train"),
        )
        base = pick(score(free_vectors(BASELINE, test_items, data), test_items, data), "euclidean")
        f_train, f_test = (
            free_vectors(free, train_items, data),
            free_vectors(free, test_items, data),
        )
        lf = pick(score(whitened(f_train, f_test, free.whiten), test_items, data), "euclidean")
        for name, loss in OBJECTIVES.items():
            views = dense if loss["name"] == "infonce" else None
            val_q: dict[int, list[float]] = {}
            for _, inner, held in val:
                f_inner, f_held = free_vectors(free, inner, data), free_vectors(free, held, data)
                for e, state in train(
                    inner, data.feats, seeds[0], TEMPORAL, loss, views, memo=data.memo
                ).snapshots.items():
                    z = whitened(
                        fused(f_inner, learned_vectors(state, inner, data, TEMPORAL), w),
                        fused(f_held, learned_vectors(state, held, data, TEMPORAL), w),
                        free.whiten,
                    )
                    val_q.setdefault(e, []).append(quality(score(z, held, data)))
            epochs = max(val_q, key=lambda e: (np.mean(val_q[e]), -e))
            for seed in seeds:
                state = train(train_items, data.feats, seed, TEMPORAL, loss, views).snapshots[
                    epochs
                ]
                z = whitened(
                    fused(f_train, learned_vectors(state, train_items, data, TEMPORAL), w),
                    fused(f_test, learned_vectors(state, test_items, data, TEMPORAL), w),
                    free.whiten,
                )
                eu = pick(score(z, test_items, data), "euclidean")
                rows.append(
                    {
                        "fold": fold.test,
                        "objective": name,
                        "seed": seed,
                        "epochs": epochs,
                        "p_at_5": eu["accuracy"],
                        "map": eu["map"],
                        "gain_p_at_5": eu["accuracy"] - base["accuracy"],
                        "gain_map": eu["map"] - base["map"],
                        "vs_training_free_p_at_5": eu["accuracy"] - lf["accuracy"],
                        "vs_training_free_map": eu["map"] - lf["map"],
                    }
                )
                log.info(
                    "objective %s %s seed %d (%d epochs): P@5 %.3f mAP %.3f (training-free %.3f / "
                    "%.3f)",
                    fold.test,
                    name,
                    seed,
                    epochs,
                    eu["accuracy"],
                    eu["map"],
                    lf["accuracy"],
                    lf["map"],
                )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "objectives.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "| objective | P@5 | mAP | gain over baseline P@5 / mAP | over the training-free part P@5 "
        "/ mAP |",
        "|" + " --- |" * 5,
    ]
    for name in OBJECTIVES:
        rs = [r for r in rows if r["objective"] == name]
        m = {
            k: float(np.mean([r[k] for r in rs]))
            for k in rs[0]
            if k not in ("fold", "objective", "seed")
        }
        lines.append(
            f"| {name} | {m['p_at_5']:.3f} | {m['map']:.3f} | {m['gain_p_at_5']:+.3f} / "
            f"{m['gain_map']:+.3f} | "
            f"{m['vs_training_free_p_at_5']:+.3f} / {m['vs_training_free_map']:+.3f} |"
        )
    (out_dir / "objectives.md").write_text(
        "# Objectives (unseen folds not at the ceiling)\n\n" + "\n".join(lines) + "\n"
    )
    print("\n".join(lines))
    return rows


def curve_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted({r["n_sources"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, key, title in ((axes[0], "p_at_5", "P@5"), (axes[1], "map", "mAP")):
        for label, k in (
            ("default (trained)", f"gain_{key}"),
            ("training-free part alone", f"label_free_gain_{key}"),
        ):
            means = [np.mean([r[k] for r in rows if r["n_sources"] == n]) for n in ns]
            stds = [np.std([r[k] for r in rows if r["n_sources"] == n]) for n in ns]
            ax.errorbar(ns, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(ns)
        ax.set_xlabel("training sources")
        ax.set_title(f"{title} gain over the Lite0 baseline (unseen test source)", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ceiling_of(items: list[MediaItem]) -> float:
    """Best possible P@5 in leave-one-out: min(R, 5) / 5 averaged over queries."""
    from collections import Counter

    counts = Counter(it.label for it in items)
    return float(np.mean([min(counts[it.label] - 1, K) / K for it in items]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--real-dir",
        default=real_clips_dir(str(ROOT)),
        help="the shared real clips (default: $MEDIA_RETRIEVAL_REAL_CLIPS, else "
        "../shared/data/real-clips)",
    )
    p.add_argument("--cache-dir", default=str(ROOT / ".cache" / "features"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--folds", nargs="*", default=None, help="test sources to run (default: all eight)"
    )
    p.add_argument("--out", default=None)
    p.add_argument(
        "--learning-curve",
        action="store_true",
        help="instead: the gain over no training with 1 .. 7 training sources",
    )
    p.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="instead: rewrite the table, chart and summary of an earlier run's "
        "real_benchmark.json",
    )
    p.add_argument(
        "--subsets",
        type=int,
        default=5,
        help="--learning-curve: sampled subsets per size (at most)",
    )
    p.add_argument(
        "--objectives",
        action="store_true",
        help="instead: the default with its learned part trained by each objective",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        rows = [r for r in saved["rows"] if r.get("seed") != "mean"]
        for r in rows:  # names written before the table-safe form
            r["embedding"] = r.get("embedding", "").replace(" | whiten ", ", whitened to ")
        out = Path(args.out) if args.out else Path(args.render).parent
        write_outputs(out, rows, summarise(rows, saved["meta"]["ceilings_p_at_5"]), saved["meta"])
        return
    real = Path(args.real_dir)
    if not real.is_dir():
        sys.exit(
            f"error: real footage not found at {real}: pass --real-dir or set "
            "MEDIA_RETRIEVAL_REAL_CLIPS "
            "(see ../shared/data/real-clips/README.md)"
        )
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    data = load_data(real, Path(args.cache_dir))
    log.info(
        "features ready: %s clips (%.0f s)",
        {s: len(v) for s, v in data.sources.items()},
        time.time() - t0,
    )
    out = (
        Path(args.out)
        if args.out
        else ROOT / "logs" / "real_benchmark" / time.strftime("%Y-%m-%d_%H-%M-%S")
    )
    if args.objectives:
        _, dense, _ = load_sources(real, Path(args.cache_dir), dense_frames=DENSE_FRAMES)
        objectives(data, dense, list(range(args.seeds)), out)
        print(f"objectives: {out / 'objectives.md'} ({time.time() - t0:.0f} s)")
        return
    if args.learning_curve:
        learning_curve(data, list(range(args.seeds)), out, subsets=args.subsets)
        print(f"learning curve: {out / 'learning_curve.png'} ({time.time() - t0:.0f} s)")
        return
    folds = [
        f
        for f in leave_one_source_out(data.sources, allow_shared=True)
        if not args.folds or f.test in args.folds
    ]
    rows, ceilings = [], {}
    for fold in sorted(folds, key=lambda f: SETS.index(f.test)):
        ceilings[fold.test] = ceiling_of(fold.items(data.sources, "test"))
        rows += run_fold(fold, data, list(range(args.seeds)))
    summary = summarise(rows, ceilings)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    meta = {
        "command": "make real-benchmark" if not argv and len(sys.argv) == 1 else " ".join(sys.argv),
        "seconds": time.time() - t0,
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
        "commit": commit.strip(),
        "seeds": args.seeds,
        "epochs_grid": EPOCHS,
        "fusion_weights": WEIGHTS,
        "i3d_weights": I3D_WEIGHTS,
        "whiten_dims": WHITEN,
        "deltas": DELTAS,
        "validation_order": VALIDATION_ORDER,
        "protocol": "round 3: training-free choices on all training sources, trained grids on "
        "the three fixed validation sources",
        "free_grid": [asdict(e) for e in FREE_GRID],
        "ceilings_p_at_5": ceilings,
    }
    write_outputs(out, rows, summary, meta)
    print(f"real benchmark: {out / 'real_benchmark.md'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
