"""Quality on real footage: leave-one-source-out over the four sets of ``real-clips``.

Each fold trains on three sources and tests on the fourth, whose classes are all unseen
(leave-one-out retrieval inside the test set: every clip a query, the others its gallery).
Choices inside a fold (epochs, fusion weight, δ) are made on validation carved from the
training sources only: each training source in turn is held out (unseen classes, like the
test), the model is trained on the other two and scored there; the choice with the best mean
of P@5 and mAP over the three wins. The final model then trains on all three. 3 seeds.

Models, all through this project's code (feature cache, ``TemporalHead``, ``CNNLSTM``'s
training step, ``score_rows``, ``select_delta``):
- ``baseline``: no training, the mean of the 16 ImageNet Lite0 frame features (the README's
  reference pipeline of ``real-clips``).
- ``mean_std``: no training, normalised mean ⊕ standard deviation of the frame features.
- ``cnn_lstm_paper``: the LSTM embedding alone (``model.temporal.stats=[]``), trained.
- ``mean_std_whiten``: ``mean_std`` PCA-whitened (fitted on the training sources' clips, no
  labels; the dimension chosen on validation).
- ``cnn_lstm``: the fused model (statistics ⊕ w · learned LSTM part, then whitening),
  trained; w, the whitening dimension and the epochs chosen on validation.
- ``cnn_lstm_default``: the same trained networks with ``configs/model/cnn_lstm.yaml``'s fixed
  ``fusion_weight`` and ``whiten`` (only the epochs chosen on validation): what a user who
  changes nothing gets.

Usage (``make real-benchmark``)::

    PYTHONPATH=src .venv/bin/python benchmarks/real_benchmark.py [--seeds 3] [--out DIR]

Frame features are computed once into ``.cache/features`` (shared by folds, seeds and later
runs); the rest is training small heads on them.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from media_retrieval.data.discovery import MediaItem  # noqa: E402
from media_retrieval.data.folds import Fold, leave_one_source_out  # noqa: E402

SETS = ("ucf101-mini", "gestures-mini", "fight-cctv", "exercise-typing")
K = 5
DELTAS = [round(0.05 * i, 2) for i in range(0, 20)]  # 0.0 .. 0.95
EPOCHS = (10, 30)
WEIGHTS = (0.0, 0.25, 0.5, 1.0)
WHITEN = (None, 32, 64, 128)  # PCA-whitening dimensions tried (None: no whitening)
TEMPORAL = {"cell": "lstm", "hidden": 256, "center": True}
FUSED_STATS = ["mean", "std"]
log = logging.getLogger("real_benchmark")


# ---------------------------------------------------------------------------- data
def load_sources(real_dir: Path, cache_dir: Path, dense_frames: int | None = None,
                 roots: dict[str, Path] | None = None) -> tuple[dict[str, list[MediaItem]], dict[str, np.ndarray]]:
    """The clips of each set and their (16, 1280) frame features (``dense_frames``: that many
    per clip instead, for self-supervised views), computed once (cached). ``roots``: other
    class-per-folder sets instead of the four real ones."""
    from media_retrieval.data.datamodule import FolderDataModule
    from media_retrieval.models.backbones import create_backbone

    roots = roots or {s: real_dir / s for s in SETS}
    dm = FolderDataModule(roots={s: str(r) for s, r in roots.items()}, frames=16, image_size=224, resize="stretch",
                          sampling="index", chunk_s=None, cache_dir=str(cache_dir), num_workers=1, dedupe=False,
                          kinds=["video"], feature_batch_size=1, dense_frames=dense_frames)
    backbone = create_backbone("efficientnet_lite0", "imagenet")
    dm.attach_frame_encoder(backbone, backbone.spec())
    dm.prepare_data()
    bad = dm.cache.skipped()
    sources: dict[str, list[MediaItem]] = {s: [] for s in roots}
    feats: dict[str, np.ndarray] = {}
    for it in dm.items():
        key = dm.content_key(it)
        if key in bad or key not in dm.cache:
            log.warning("skipping %s: %s", it.path, bad.get(key, "no features"))
            continue
        sources[it.dataset].append(it)
        feats[it.key] = np.asarray(dm.cache.get(key), dtype=np.float32)
    return sources, feats


def stack(items: list[MediaItem], feats: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([feats[it.key] for it in items]))


# ---------------------------------------------------------------------------- scoring
def score(vectors: torch.Tensor, items: list[MediaItem]) -> list[dict]:
    """Leave-one-out result rows (every clip a query against all the others), unseen classes."""
    from media_retrieval.retrieval.evaluate import EmbeddingSet, score_rows

    names = sorted({it.label for it in items})
    labels = np.array([names.index(it.label) for it in items])
    n = len(items)
    emb = EmbeddingSet(ids=np.arange(n), vectors=vectors.float(), labels=labels, seen=np.zeros(n, bool),
                       is_query=np.ones(n, bool), is_gallery=np.ones(n, bool))
    return score_rows(emb, [K], delta=0.8, deltas=DELTAS)


def pick(rows: list[dict], ranking: str, delta: float | None = None) -> dict:
    for r in rows:
        if r["ranking"] == ranking and r["split"] == "all" and r["dataset"] == "all" and r["k"] == K and \
                (delta is None or abs(r["delta"] - delta) < 1e-9):
            return r
    raise KeyError((ranking, delta))


def quality(rows: list[dict]) -> float:
    """What validation maximises: the mean of P@5 and mAP."""
    eu = pick(rows, "euclidean")
    return (eu["accuracy"] + eu["map"]) / 2


def averaged_par_rows(row_sets: list[list[dict]]) -> list[dict]:
    """PAR rows averaged over several validation sources (what ``select_delta`` then reads)."""
    out = []
    for d in DELTAS:
        rs = [pick(rows, "par", d) for rows in row_sets]
        acc = [r["accuracy"] for r in rs if not math.isnan(r["accuracy"])]
        out.append({"ranking": "par", "split": "all", "dataset": "all", "k": K, "delta": d,
                    "accuracy": float(np.mean(acc)) if acc else float("nan"),
                    "empty_share": float(np.mean([r["empty_share"] for r in rs])),
                    "mean_kept": float(np.mean([r["mean_kept"] for r in rs]))})
    return out


def choose_delta(row_sets: list[list[dict]]) -> float:
    from media_retrieval.retrieval.par import select_delta

    d = select_delta(averaged_par_rows(row_sets), K)
    return 0.0 if d is None else d  # none qualifies: the most permissive δ of the grid


# ---------------------------------------------------------------------------- models
@dataclass
class Trained:
    """Temporal-head weights after each epoch of ``EPOCHS``."""

    snapshots: dict[int, dict[str, torch.Tensor]]
    stats: list[str]


class ViewData(torch.utils.data.Dataset):
    """Training clips with two random views cut from dense features, by the DataModule's own
    view code (``data.dense_frames``)."""

    def __init__(self, items: list[MediaItem], dense: dict[str, np.ndarray], targets: torch.Tensor) -> None:
        from media_retrieval.data.datamodule import VideoRetrievalDataModule

        self.items, self.dense, self.targets = items, dense, targets
        self.dm = VideoRetrievalDataModule(frames=16, dense_frames=next(iter(dense.values())).shape[0])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        views = self.dm._views(torch.from_numpy(self.dense[self.items[i].key]), train=True)
        return {**views, "target": self.targets[i], "sample_id": i}


def train(items: list[MediaItem], feats: dict[str, np.ndarray], seed: int, stats: list[str],
          loss: dict | None = None, dense: dict[str, np.ndarray] | None = None) -> Trained:
    """The default model's training step (``CNNLSTM`` + the objective, cross-entropy unless
    ``loss`` says, on the learned part) on cached features (``dense``: two views per clip for
    InfoNCE); the temporal head is snapshotted after each epoch in ``EPOCHS``."""
    import lightning as L

    from media_retrieval.models import CNNLSTM

    classes = sorted({it.label for it in items})
    L.seed_everything(seed, workers=True, verbose=False)
    model = CNNLSTM(backbone={"name": "efficientnet_lite0", "weights": "none"},
                    temporal={**TEMPORAL, "stats": stats}, num_classes=len(classes), lr=1e-3, loss=loss)
    y = torch.tensor([classes.index(it.label) for it in items])
    if dense is not None:
        data = ViewData(items, dense, y)
    else:
        x = stack(items, feats)
        data = [{"features": x[i], "target": y[i], "sample_id": i} for i in range(len(items))]
    sampler = None
    if loss and loss.get("name") in ("supcon", "triplet"):  # metric losses want several clips per class
        from pytorch_metric_learning.samplers import MPerClassSampler

        sampler = MPerClassSampler(y.tolist(), 8, batch_size=32, length_before_new_iter=max(len(items) // 32, 1) * 32)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=sampler is None, sampler=sampler)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.current_epoch + 1 in EPOCHS:
                snapshots[trainer.current_epoch + 1] = copy.deepcopy(pl_module.temporal.state_dict())

    trainer = L.Trainer(max_epochs=max(EPOCHS), accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Snapshot()])
    trainer.fit(model, loader)
    return Trained(snapshots, stats)


def head(stats: list[str], cell: str = "lstm", state: dict | None = None, weight: float = 1.0, in_dim: int = 1280):
    from media_retrieval.models.temporal import TemporalHead

    h = TemporalHead(in_dim, **{**TEMPORAL, "cell": cell, "stats": stats, "fusion_weight": weight}).eval()
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
    from media_retrieval.models.whitening import Whitening

    if dim is None:
        return z
    w = Whitening(train_z.shape[1], dim)
    w.fit(train_z)
    return w(z)


TRAINING_FREE = {"baseline": ([], "none"), "mean_std": (FUSED_STATS, "none")}


def config_defaults() -> tuple[float, int | None]:
    """``fusion_weight`` and ``whiten`` of the default model config."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs" / "model" / "cnn_lstm.yaml")
    return float(cfg.temporal.fusion_weight), cfg.get("whiten")


# ---------------------------------------------------------------------------- one fold
def run_fold(fold: Fold, sources: dict, feats: dict, seeds: list[int]) -> list[dict]:
    out = []
    test_items = fold.items(sources, "test")
    train_items = fold.items(sources, "train")
    # training-free models: δ chosen on the training sources (each scored leave-one-out alone)
    for name, (stats, cell) in TRAINING_FREE.items():
        h = head(stats, cell)
        delta = choose_delta([score(embed(h, sources[s], feats), sources[s]) for s in fold.train])
        rows = score(embed(h, test_items, feats), test_items)
        out.append(result_row(fold.test, name, "none", rows, delta, {}))
    # label-free learning only: whitening fitted on the training sources, its dimension on validation
    h = head(FUSED_STATS, "none")
    val_w: dict[int | None, list[list[dict]]] = {}
    for held in fold.train:
        inner = [it for s in fold.train if s != held for it in sources[s]]
        for d in WHITEN:
            z = whitened(embed(h, inner, feats), embed(h, sources[held], feats), d)
            val_w.setdefault(d, []).append(score(z, sources[held]))
    d, best = max(val_w.items(), key=lambda kv: np.mean([quality(r) for r in kv[1]]))
    rows = score(whitened(embed(h, train_items, feats), embed(h, test_items, feats), d), test_items)
    out.append(result_row(fold.test, "mean_std_whiten", "none", rows, choose_delta(best), {"whiten": d}))
    for seed in seeds:
        for name, stats in (("cnn_lstm", FUSED_STATS), ("cnn_lstm_paper", [])):
            weights, dims = (WEIGHTS, WHITEN) if stats else ((1.0,), (None,))
            w0, d0 = config_defaults()
            if stats:  # the default config's values are among those scored
                weights, dims = tuple(sorted({*weights, w0})), tuple(dict.fromkeys([*dims, d0]))
            # validation: each training source held out in turn (its classes unseen, like the test)
            val: dict[tuple, list[list[dict]]] = {}
            for held in fold.train:
                inner = [it for s in fold.train if s != held for it in sources[s]]
                trained = train(inner, feats, seed, stats)
                for e, state in trained.snapshots.items():
                    for w in weights:
                        h = head(stats, state=state, weight=w)
                        z_inner, z_held = embed(h, inner, feats), embed(h, sources[held], feats)
                        for d in dims:
                            val.setdefault((e, w, d), []).append(score(whitened(z_inner, z_held, d), sources[held]))
            (epochs, w, d), best = max(val.items(), key=lambda kv: (np.mean([quality(r) for r in kv[1]]),
                                                                     -kv[0][1]))
            delta = choose_delta(best)
            final = train(train_items, feats, seed, stats)
            h = head(stats, state=final.snapshots[epochs], weight=w)
            z = whitened(embed(h, train_items, feats), embed(h, test_items, feats), d)
            rows = score(z, test_items)
            out.append(result_row(fold.test, name, seed, rows, delta, {"epochs": epochs, "fusion_weight": w,
                                                                       "whiten": d}))
            log.info("%s %s seed %d: epochs %d, w %.2f, whiten %s, δ %.2f -> P@5 %.3f mAP %.3f", fold.test, name,
                     seed, epochs, w, d, delta, out[-1]["p_at_5"], out[-1]["map"])
            if stats:  # the default config: its w and whitening, the epochs chosen on validation
                e0, best0 = max(((e, r) for (e, w_, d_), r in val.items() if w_ == w0 and d_ == d0),
                                key=lambda er: np.mean([quality(r) for r in er[1]]))
                h = head(stats, state=final.snapshots[e0], weight=w0)
                z = whitened(embed(h, train_items, feats), embed(h, test_items, feats), d0)
                out.append(result_row(fold.test, "cnn_lstm_default", seed, score(z, test_items),
                                      choose_delta(best0), {"epochs": e0, "fusion_weight": w0, "whiten": d0}))
    return out


def result_row(fold: str, model: str, seed, rows: list[dict], delta: float, chosen: dict) -> dict:
    eu, par = pick(rows, "euclidean"), pick(rows, "par", delta)
    return {"fold": fold, "model": model, "seed": seed, "p_at_5": eu["accuracy"], "map": eu["map"],
            "par_accuracy_at_5": par["accuracy"], "par_mean_kept": par["mean_kept"],
            "par_empty_share": par["empty_share"], "delta": delta, **chosen}


# ---------------------------------------------------------------------------- report
METRICS = ("p_at_5", "map", "par_accuracy_at_5", "par_mean_kept", "par_empty_share", "delta")


def summarise(rows: list[dict], ceilings: dict[str, float]) -> list[dict]:
    """Per (fold, model) a ``mean`` row with the seed spread (std), and a ``mean`` fold."""
    out = []
    folds = sorted({r["fold"] for r in rows}, key=SETS.index)
    models = list(dict.fromkeys(r["model"] for r in rows))
    for fold in folds:
        for model in models:
            rs = [r for r in rows if r["fold"] == fold and r["model"] == model]
            m = {"fold": fold, "model": model, "seed": "mean", "n_seeds": len(rs)}
            for key in METRICS:
                vals = [r[key] for r in rs if not (isinstance(r[key], float) and math.isnan(r[key]))]
                m[key] = float(np.mean(vals)) if vals else float("nan")
                m[f"{key}_std"] = float(np.std(vals)) if vals else float("nan")
            base = next(r for r in rows if r["fold"] == fold and r["model"] == "baseline")
            m["at_ceiling"] = base["p_at_5"] >= ceilings[fold] - 1e-6
            out.append(m)
    for model in models:
        ms = [m for m in out if m["model"] == model]
        open_ = [m for m in ms if not m["at_ceiling"]]
        for fold_name, group in (("mean", ms), ("mean_not_at_ceiling", open_)):
            if group:
                out.append({"fold": fold_name, "model": model, "seed": "mean", "n_folds": len(group),
                            **{k: float(np.mean([m[k] for m in group])) for k in METRICS},
                            **{f"{k}_std": float(np.mean([m[f'{k}_std'] for m in group])) for k in METRICS}})
    return out


def write_outputs(out_dir: Path, rows: list[dict], summary: list[dict], meta: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "real_benchmark.json").write_text(json.dumps({"meta": meta, "rows": rows + summary}, indent=1))
    table = Table(title="Real footage, leave-one-source-out (test classes unseen; mean ± seed std)")
    for col in ("fold", "model", "P@5", "mAP", "PAR acc@5", "kept", "empty", "δ"):
        table.add_column(col, justify="left" if col in ("fold", "model") else "right")
    lines = ["| fold | model | P@5 | mAP | PAR acc@5 | PAR mean_kept | PAR empty_share | δ |", "|" + " --- |" * 8]
    for m in summary:
        fold = m["fold"] + (" (ceiling)" if m.get("at_ceiling") else "")
        cells = [f"{m['p_at_5']:.3f} ± {m['p_at_5_std']:.3f}", f"{m['map']:.3f} ± {m['map_std']:.3f}",
                 f"{m['par_accuracy_at_5']:.3f}", f"{m['par_mean_kept']:.2f}", f"{m['par_empty_share']:.3f}",
                 f"{m['delta']:.2f}"]
        table.add_row(fold, m["model"], *cells)
        lines.append(f"| {fold} | {m['model']} | " + " | ".join(cells) + " |")
    Console(width=140).print(table)
    (out_dir / "real_benchmark.md").write_text(
        "# Real footage: leave-one-source-out\n\n" + "\n".join(lines) + "\n\n"
        f"Command: `{meta['command']}` ({meta['seconds']:.0f} s, {meta['machine']}).\n")
    bar_chart(summary, out_dir / "real_benchmark.png")


def bar_chart(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = [f for f in dict.fromkeys(m["fold"] for m in summary) if f != "mean_not_at_ceiling"]
    models = list(dict.fromkeys(m["model"] for m in summary))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, key, title in ((axes[0], "p_at_5", "P@5"), (axes[1], "map", "mAP")):
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            vals = [next(m[key] for m in summary if m["fold"] == f and m["model"] == model) for f in folds]
            errs = [next(m[f"{key}_std"] for m in summary if m["fold"] == f and m["model"] == model) for f in folds]
            ax.bar(np.arange(len(folds)) + i * width, vals, width, yerr=errs, label=model, capsize=2)
        ax.set_xticks(np.arange(len(folds)) + 0.4 - width / 2, folds, rotation=15)
        ax.set_title(f"{title}: test source (its classes unseen)")
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def learning_curve(sources: dict, feats: dict, seeds: list[int], out_dir: Path) -> list[dict]:
    """Gain over the baseline as the training sources grow (1, 2, 3), on the folds not at the
    ceiling: the default config (its w and whitening, 10 epochs) and the label-free part alone
    (mean ⊕ std whitened on the same sources), each on the fold's test source."""
    w0, d0 = config_defaults()
    rows = []
    for fold in leave_one_source_out(sources):
        test_items = fold.items(sources, "test")
        base = pick(score(embed(head([], "none"), test_items, feats), test_items), "euclidean")
        if ceiling_of(test_items) <= base["accuracy"] + 1e-6:
            continue
        free = head(FUSED_STATS, "none")
        for n in range(1, len(fold.train) + 1):
            for subset in itertools.combinations(fold.train, n):
                items = [it for s in subset for it in sources[s]]
                z = whitened(embed(free, items, feats), embed(free, test_items, feats), d0)
                lf = pick(score(z, test_items), "euclidean")
                for seed in seeds:
                    trained = train(items, feats, seed, FUSED_STATS)
                    h = head(FUSED_STATS, state=trained.snapshots[min(EPOCHS)], weight=w0)
                    z = whitened(embed(h, items, feats), embed(h, test_items, feats), d0)
                    eu = pick(score(z, test_items), "euclidean")
                    rows.append({"fold": fold.test, "n_sources": n, "sources": list(subset), "seed": seed,
                                 "gain_p_at_5": eu["accuracy"] - base["accuracy"], "gain_map": eu["map"] - base["map"],
                                 "label_free_gain_p_at_5": lf["accuracy"] - base["accuracy"],
                                 "label_free_gain_map": lf["map"] - base["map"]})
                log.info("curve %s %s: default %+.3f P@5 / %+.3f mAP; label-free %+.3f / %+.3f", fold.test, subset,
                         np.mean([r["gain_p_at_5"] for r in rows[-len(seeds):]]),
                         np.mean([r["gain_map"] for r in rows[-len(seeds):]]), rows[-1]["label_free_gain_p_at_5"],
                         rows[-1]["label_free_gain_map"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "learning_curve.json").write_text(json.dumps(rows, indent=1))
    curve_plot(rows, out_dir / "learning_curve.png")
    return rows


def synthetic_corpus() -> Path:
    """The built-in corpus's ``style_a`` (12 motion classes, 30 clips each), generated with
    ``configs/data/builtin.yaml``'s settings unless an identical one is already there."""
    from omegaconf import OmegaConf

    from media_retrieval.data.corpus import CorpusSpec, ensure_corpus

    corpus = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "data" / "builtin.yaml").corpus)
    spec = CorpusSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in corpus.items()})
    return ensure_corpus(ROOT / "data" / "builtin", spec) / "style_a"


def synthetic_classes(sources: dict, feats: dict, synth: list[MediaItem], seeds: list[int], out_dir: Path
                      ) -> list[dict]:
    """Do more training classes help unseen real footage when they are synthetic? The default
    config (its w and whitening) trained on a fold's real training sources, with and without the
    built-in corpus's 12 synthetic motion classes. Whether to add them (and the epochs) is
    chosen per fold and seed on validation (each real training source held out in turn, as in
    :func:`run_fold`); the test source is scored for both, and for the choice."""
    w0, d0 = config_defaults()
    rows = []
    for fold in leave_one_source_out(sources):
        test_items, train_items = fold.items(sources, "test"), fold.items(sources, "train")
        base = pick(score(embed(head([], "none"), test_items, feats), test_items), "euclidean")
        for seed in seeds:
            val: dict[tuple[str, int], list[float]] = {}
            for held in fold.train:
                inner = [it for s in fold.train if s != held for it in sources[s]]
                for variant, items in (("real", inner), ("real+synthetic", inner + synth)):
                    for e, state in train(items, feats, seed, FUSED_STATS).snapshots.items():
                        h = head(FUSED_STATS, state=state, weight=w0)
                        z = whitened(embed(h, items, feats), embed(h, sources[held], feats), d0)
                        val.setdefault((variant, e), []).append(quality(score(z, sources[held])))
            chosen, epochs = max(val, key=lambda ve: (np.mean(val[ve]), ve[0] == "real"))  # ties: no synthetic
            for variant, items in (("real", train_items), ("real+synthetic", train_items + synth)):
                e = epochs if variant == chosen else max((ve for ve in val if ve[0] == variant),
                                                         key=lambda ve: np.mean(val[ve]))[1]
                h = head(FUSED_STATS, state=train(items, feats, seed, FUSED_STATS).snapshots[e], weight=w0)
                eu = pick(score(whitened(embed(h, items, feats), embed(h, test_items, feats), d0), test_items),
                          "euclidean")
                row = {"fold": fold.test, "seed": seed, "variant": variant, "epochs": e, "chosen": variant == chosen,
                       "val_quality": float(np.mean(val[(variant, e)])), "p_at_5": eu["accuracy"], "map": eu["map"],
                       "gain_p_at_5": eu["accuracy"] - base["accuracy"], "gain_map": eu["map"] - base["map"],
                       "at_ceiling": ceiling_of(test_items) <= base["accuracy"] + 1e-6}
                rows.append(row)
            log.info("synthetic %s seed %d: validation chose %s (%d epochs); test %s", fold.test, seed, chosen, epochs,
                     {r["variant"]: (round(r["p_at_5"], 3), round(r["map"], 3)) for r in rows[-2:]})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "synthetic_classes.json").write_text(json.dumps(rows, indent=1))
    lines = ["| fold | variant | P@5 | mAP | gain P@5 / mAP | chosen by validation (seeds) |", "|---|---|---|---|---|---|"]
    for fold in sorted({r["fold"] for r in rows}, key=SETS.index):
        for variant in ("real", "real+synthetic"):
            rs = [r for r in rows if r["fold"] == fold and r["variant"] == variant]
            lines.append(f"| {fold}{' (ceiling)' if rs[0]['at_ceiling'] else ''} | {variant} | "
                         f"{np.mean([r['p_at_5'] for r in rs]):.3f} | {np.mean([r['map'] for r in rs]):.3f} | "
                         f"{np.mean([r['gain_p_at_5'] for r in rs]):+.3f} / {np.mean([r['gain_map'] for r in rs]):+.3f} | "
                         f"{sum(r['chosen'] for r in rs)} of {len(rs)} |")
    for label, sel in (("real", lambda r: r["variant"] == "real"),
                       ("real+synthetic", lambda r: r["variant"] == "real+synthetic"),
                       ("chosen on validation", lambda r: r["chosen"])):
        rs = [r for r in rows if sel(r) and not r["at_ceiling"]]
        lines.append(f"| mean_not_at_ceiling | {label} | {np.mean([r['p_at_5'] for r in rs]):.3f} | "
                     f"{np.mean([r['map'] for r in rs]):.3f} | {np.mean([r['gain_p_at_5'] for r in rs]):+.3f} / "
                     f"{np.mean([r['gain_map'] for r in rs]):+.3f} | |")
    (out_dir / "synthetic_classes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


OBJECTIVES = {
    "ce": {"name": "ce"},
    "supcon": {"name": "supcon", "temperature": 0.1},
    "triplet": {"name": "triplet", "margin": 0.1},
    "infonce": {"name": "infonce", "temperature": 0.1},
    "ce+infonce": {"name": "ce", "infonce_weight": 0.5, "temperature": 0.1},
}
DENSE_FRAMES = 32


def view_accuracy(h, train_items: list[MediaItem], items: list[MediaItem], feats: dict, dense: dict,
                  dim: int | None) -> float:
    """The label-free validation metric (``val/view_acc``) on ``items``: each clip's last two
    thirds found from its first two thirds, on the whitened embedding."""
    from media_retrieval.data.views import eval_view_pair
    from media_retrieval.models.module import view_retrieval_accuracy
    from media_retrieval.models.whitening import Whitening

    a, b = eval_view_pair(DENSE_FRAMES, 16)
    with torch.no_grad():
        za = h(torch.from_numpy(np.stack([dense[it.key][a] for it in items])))
        zb = h(torch.from_numpy(np.stack([dense[it.key][b] for it in items])))
        if dim is not None:
            w = Whitening(za.shape[1], dim)
            w.fit(embed(h, train_items, feats))
            za, zb = w(za), w(zb)
    return view_retrieval_accuracy(za, zb)


def objectives(sources: dict, feats: dict, dense: dict, seeds: list[int], out_dir: Path) -> list[dict]:
    """The default model (its fusion weight and whitening) trained with each objective of
    :data:`OBJECTIVES` on the folds not at the ceiling. Epochs (10 or 30) are chosen on
    validation (each training source held out in turn): by P@5 and mAP for objectives with
    labels, by the label-free view accuracy for ``infonce`` (which never sees a label)."""
    w0, d0 = config_defaults()
    rows = []
    for fold in leave_one_source_out(sources):
        test_items, train_items = fold.items(sources, "test"), fold.items(sources, "train")
        base = pick(score(embed(head([], "none"), test_items, feats), test_items), "euclidean")
        if ceiling_of(test_items) <= base["accuracy"] + 1e-6:
            continue
        free = head(FUSED_STATS, "none")
        lf = pick(score(whitened(embed(free, train_items, feats), embed(free, test_items, feats), d0), test_items),
                  "euclidean")
        for name, loss in OBJECTIVES.items():
            views = loss["name"] == "infonce" or loss.get("infonce_weight")
            for seed in seeds:
                val: dict[int, list[float]] = {}
                for held in fold.train:
                    inner = [it for s in fold.train if s != held for it in sources[s]]
                    trained = train(inner, feats, seed, FUSED_STATS, loss, dense if views else None)
                    for e, state in trained.snapshots.items():
                        h = head(FUSED_STATS, state=state, weight=w0)
                        if loss["name"] == "infonce":
                            v = view_accuracy(h, inner, sources[held], feats, dense, d0)
                        else:
                            v = quality(score(whitened(embed(h, inner, feats), embed(h, sources[held], feats), d0),
                                              sources[held]))
                        val.setdefault(e, []).append(v)
                epochs = max(val, key=lambda e: np.mean(val[e]))
                final = train(train_items, feats, seed, FUSED_STATS, loss, dense if views else None)
                h = head(FUSED_STATS, state=final.snapshots[epochs], weight=w0)
                eu = pick(score(whitened(embed(h, train_items, feats), embed(h, test_items, feats), d0), test_items),
                          "euclidean")
                rows.append({"fold": fold.test, "objective": name, "seed": seed, "epochs": epochs,
                             "p_at_5": eu["accuracy"], "map": eu["map"],
                             "gain_p_at_5": eu["accuracy"] - base["accuracy"], "gain_map": eu["map"] - base["map"],
                             "vs_label_free_p_at_5": eu["accuracy"] - lf["accuracy"],
                             "vs_label_free_map": eu["map"] - lf["map"]})
                log.info("objective %s %s seed %d (%d epochs): P@5 %.3f mAP %.3f (baseline %.3f / %.3f)", fold.test,
                         name, seed, epochs, eu["accuracy"], eu["map"], base["accuracy"], base["map"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "objectives.json").write_text(json.dumps(rows, indent=1))
    lines = ["| objective | P@5 | mAP | gain over baseline P@5 / mAP | over label-free part P@5 / mAP |",
             "|" + " --- |" * 5]
    for name in OBJECTIVES:
        rs = [r for r in rows if r["objective"] == name]
        m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k not in ("fold", "objective", "seed")}
        sd = {k: float(np.std([np.mean([r[k] for r in rs if r["seed"] == s]) for s in seeds])) for k in ("p_at_5", "map")}
        lines.append(f"| {name} | {m['p_at_5']:.3f} ± {sd['p_at_5']:.3f} | {m['map']:.3f} ± {sd['map']:.3f} | "
                     f"{m['gain_p_at_5']:+.3f} / {m['gain_map']:+.3f} | "
                     f"{m['vs_label_free_p_at_5']:+.3f} / {m['vs_label_free_map']:+.3f} |")
    (out_dir / "objectives.md").write_text("# Objectives (folds not at the ceiling; ± over seeds)\n\n" + "\n".join(lines)
                                           + "\n")
    print("\n".join(lines))
    return rows


def curve_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted({r["n_sources"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, key, title in ((axes[0], "p_at_5", "P@5"), (axes[1], "map", "mAP")):
        for label, k in (("default (trained)", f"gain_{key}"), ("label-free part alone", f"label_free_gain_{key}")):
            means = [np.mean([r[k] for r in rows if r["n_sources"] == n]) for n in ns]
            stds = [np.std([r[k] for r in rows if r["n_sources"] == n]) for n in ns]
            ax.errorbar(ns, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(ns)
        ax.set_xlabel("training sources")
        ax.set_title(f"{title} gain over no training (unseen test source)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real-dir", default=str(ROOT.parent / "shared" / "data" / "real-clips"))
    p.add_argument("--cache-dir", default=str(ROOT / ".cache" / "features"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--folds", nargs="*", default=None, help="test sources to run (default: all four)")
    p.add_argument("--out", default=None)
    p.add_argument("--learning-curve", action="store_true",
                   help="instead: the gain over no training with 1, 2 and 3 training sources")
    p.add_argument("--synthetic", action="store_true",
                   help="instead: the default trained with and without the built-in corpus's synthetic classes")
    p.add_argument("--objectives", action="store_true",
                   help="instead: the default model trained with each objective (ce, metric losses, InfoNCE)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    real = Path(args.real_dir)
    if not real.is_dir():
        sys.exit(f"error: real footage not found at {real}: pass --real-dir (see ../shared/data/real-clips/README.md)")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    sources, feats = load_sources(real, Path(args.cache_dir))
    log.info("features ready: %s clips (%.0f s)", {s: len(v) for s, v in sources.items()}, time.time() - t0)
    out = Path(args.out) if args.out else ROOT / "logs" / "real_benchmark" / time.strftime("%Y-%m-%d_%H-%M-%S")
    if args.objectives:
        _, dense = load_sources(real, Path(args.cache_dir), dense_frames=DENSE_FRAMES)
        objectives(sources, feats, dense, list(range(args.seeds)), out)
        print(f"objectives: {out / 'objectives.md'} ({time.time() - t0:.0f} s)")
        return
    if args.synthetic:
        synth_sources, synth_feats = load_sources(real, Path(args.cache_dir), roots={"builtin": synthetic_corpus()})
        feats.update(synth_feats)
        synthetic_classes(sources, feats, synth_sources["builtin"], list(range(args.seeds)), out)
        print(f"synthetic classes: {out / 'synthetic_classes.md'} ({time.time() - t0:.0f} s)")
        return
    if args.learning_curve:
        learning_curve(sources, feats, list(range(args.seeds)), out)
        print(f"learning curve: {out / 'learning_curve.png'} ({time.time() - t0:.0f} s)")
        return
    folds = [f for f in leave_one_source_out(sources) if not args.folds or f.test in args.folds]
    rows = []
    ceilings = {}
    for fold in sorted(folds, key=lambda f: SETS.index(f.test)):
        items = fold.items(sources, "test")
        ceilings[fold.test] = ceiling_of(items)
        rows += run_fold(fold, sources, feats, list(range(args.seeds)))
    summary = summarise(rows, ceilings)
    meta = {"command": "make real-benchmark" if not argv and len(sys.argv) == 1 else " ".join(sys.argv),
            "seconds": time.time() - t0, "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
            "seeds": args.seeds, "epochs_grid": EPOCHS, "fusion_weights": WEIGHTS, "whiten_dims": WHITEN,
            "deltas": DELTAS,
            "ceilings_p_at_5": ceilings}
    write_outputs(out, rows, summary, meta)
    print(f"real benchmark: {out / 'real_benchmark.md'} ({time.time() - t0:.0f} s)")


def ceiling_of(items: list[MediaItem]) -> float:
    """Best possible P@5 in leave-one-out: min(R, 5) / 5 averaged over queries."""
    from collections import Counter

    counts = Counter(it.label for it in items)
    return float(np.mean([min(counts[it.label] - 1, K) / K for it in items]))


if __name__ == "__main__":
    main()
