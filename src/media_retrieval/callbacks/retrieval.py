"""Retrieval evaluation at the end of validation and test, identical on 1 or N processes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from media_retrieval.reporting.tables import write_json, write_markdown
from media_retrieval.retrieval.embeddings_io import save_embeddings
from media_retrieval.retrieval.evaluate import EmbeddingSet, rank, score_rows
from media_retrieval.utils.distributed import gather_by_id

log = logging.getLogger(__name__)


# results.json key -> logged name; metrics of the full ranking carry no @k.
LOGGED = {"accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "f1",
          "empty_share": "empty_share", "mean_kept": "mean_kept", "p_at_k": "p", "r_at_k": "r",
          "ndcg_at_k": "ndcg", "map": "map", "map_at_r": "map_at_r", "r_precision": "r_precision"}
FULL_RANKING = ("map", "map_at_r", "r_precision")


def metric_key(row: dict, metric: str, grid: bool) -> str:
    """``retrieval/<ranking>/<split>/<metric>@<k>``, ``_d<δ>`` appended for PAR grid values."""
    suffix = f"_d{row['delta']:.2f}" if grid else ""
    at = "" if metric in FULL_RANKING else f"@{row['k']}"
    return f"retrieval/{row['ranking']}/{row['split']}/{LOGGED[metric]}{at}{suffix}"


def logged_metrics(rows: Sequence[dict], delta: float, grid: bool = True) -> dict[str, float]:
    """Result rows as logged metric names: Euclidean and PAR at the headline δ without suffix,
    every PAR δ with ``_d<δ>`` (when ``grid``); full-ranking metrics only for Euclidean."""
    out: dict[str, float] = {}
    for row in rows:
        if row.get("dataset", "all") != "all":
            continue  # per-dataset rows live in results.json / results.md
        par = row["ranking"] == "par"
        headline = not par or abs(row["delta"] - delta) < 1e-9
        for m in LOGGED:
            v = row.get(m)
            if v is None or math.isnan(v) or (m in FULL_RANKING and par):
                continue
            if headline:
                out[metric_key(row, m, grid=False)] = v
            if par and grid:
                out[metric_key(row, m, grid=True)] = v
    return out


class RetrievalCallback(L.Callback):
    """Collects ``embed`` outputs with their sample ids, gathers them across ranks and scores
    retrieval. Validation: leave-one-out over the validation clips (logged under ``val/``, no
    grid). Test: the split's queries against its gallery; every k and delta is logged and
    ``results.json`` / ``results.md`` are written to ``output_dir`` (rank 0 only)."""

    def __init__(
        self,
        k: Sequence[int] = (1, 5, 10),
        delta: float = 0.8,
        deltas: Sequence[float] = (),
        output_dir: str | None = None,
        model_name: str | None = None,
        table_k: int = 5,
        save_embeddings: bool = False,
        pictures: bool = True,
        gallery_queries: int = 6,
        exclude_same_video: bool = False,
    ) -> None:
        self.exclude_same_video = exclude_same_video
        self.save_embeddings = save_embeddings
        self.pictures, self.gallery_queries = pictures, gallery_queries
        self.k, self.delta, self.deltas = list(k), float(delta), list(deltas)
        self.output_dir = Path(output_dir) if output_dir else None
        self.model_name = model_name
        self.table_k = table_k
        self._ids: list[torch.Tensor] = []
        self._emb: list[torch.Tensor] = []
        self.rows: list[dict] = []

    # ---------------------------------------------------------------- collection
    def _reset(self) -> None:
        self._ids, self._emb = [], []

    def _collect(self, outputs) -> None:
        if isinstance(outputs, dict) and "embedding" in outputs:
            self._ids.append(outputs["sample_id"].detach())
            self._emb.append(outputs["embedding"].detach().float())

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs)

    def _gathered(self, pl_module) -> tuple[np.ndarray, torch.Tensor]:
        ids = torch.cat(self._ids) if self._ids else torch.zeros(0, dtype=torch.long)
        emb = torch.cat(self._emb) if self._emb else torch.zeros(0, 1)
        ids, emb = gather_by_id(pl_module, ids, emb)
        return ids.numpy(), emb

    def _embedding_set(self, trainer, ids: np.ndarray, emb: torch.Tensor, leave_one_out: bool) -> EmbeddingSet:
        split = trainer.datamodule.split
        items = [split.items[i] for i in ids]
        labels = np.array([split.class_index[it.label] for it in items])
        seen = np.array([it.seen for it in items], dtype=bool)
        if leave_one_out:
            q = g = np.ones(len(items), dtype=bool)
        else:
            q = np.array([it.role in ("query", "both") for it in items])
            g = np.array([it.role in ("gallery", "both") for it in items])
        groups = np.array([it.video_id for it in items])
        return EmbeddingSet(ids, emb, labels, seen, q, g, groups)

    def _name(self, pl_module) -> str:
        return self.model_name or getattr(pl_module.hparams, "name", type(pl_module).__name__)

    # ---------------------------------------------------------------- scoring
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            self._reset()
            return
        ids, emb = self._gathered(pl_module)
        if len(ids) < 2:
            return
        emb_set = self._embedding_set(trainer, ids, emb, leave_one_out=True)
        rows = score_rows(emb_set, self.k, self.delta,
                          model=self._name(pl_module), exclude_same_group=self.exclude_same_video)
        if self.save_embeddings and trainer.state.fn == "validate" and trainer.is_global_zero and self.output_dir:
            split = trainer.datamodule.split
            path = save_embeddings(self.output_dir / "val_embeddings.npz", emb_set, split.classes,
                                   [split.items[i].dataset for i in ids], model=self._name(pl_module), role="val")
            log.info("validation embeddings saved to %s (choose δ on them: src/eval.py embeddings=%s)", path, path)
        for name, value in logged_metrics(rows, self.delta, grid=False).items():
            pl_module.log("val/" + name, value, batch_size=len(ids), sync_dist=True)
        self._reset()

    def _write_pictures(self, trainer, emb: EmbeddingSet, rankings, split) -> None:
        """Table IV markdown, Fig. 4, δ plot, PR curve and a retrieval gallery (+ W&B)."""
        from media_retrieval.reporting import figures

        out = self.output_dir
        (out / "table_iv.md").write_text(figures.table_iv_markdown(self.rows, self.table_k, self.delta))
        pngs = {
            "fig4": figures.fig4_bars(self.rows, self.table_k, self.delta, out / "fig4.png"),
            "delta": figures.delta_plot(self.rows, self.table_k, out / "delta.png"),
        }
        q_seen = emb.seen[rankings.query_rows]
        curves = {name: rankings.pr11[sel].mean(0) for name, sel in
                  (("all", np.ones_like(q_seen)), ("seen", q_seen), ("unseen", ~q_seen)) if sel.any()}
        pngs["pr_curve"] = figures.pr_curve(curves, out / "pr_curve.png")
        pngs["gallery"] = figures.gallery_png(self._gallery_rows(emb, rankings, split), out / "gallery.png")
        for lg in trainer.loggers:
            if type(lg).__name__ == "WandbLogger":
                lg.log_image(key="retrieval/pictures", images=[str(p) for p in pngs.values()],
                             caption=list(pngs))
                cols = sorted({c for r in self.rows for c in r})
                lg.log_table(key="retrieval/results", columns=cols, data=[[r.get(c) for c in cols] for r in self.rows])

    def _gallery_rows(self, emb: EmbeddingSet, rankings, split):
        from media_retrieval.data.video import load_frames

        def thumb(sample_id: int) -> np.ndarray:
            frames = load_frames(split.items[sample_id].path, 3)
            return frames[len(frames) // 2].permute(1, 2, 0).numpy()

        rows = []
        step = max(len(rankings.query_rows) // self.gallery_queries, 1)
        for qi in list(range(0, len(rankings.query_rows), step))[: self.gallery_queries]:
            q = rankings.query_rows[qi]
            q_item = split.items[emb.ids[q]]
            results = [(thumb(emb.ids[g]), split.items[emb.ids[g]].label, bool(emb.labels[g] == emb.labels[q]))
                       for g, ok in zip(rankings.topk[qi, : self.table_k], rankings.valid[qi, : self.table_k],
                                        strict=True) if ok]
            rows.append((thumb(emb.ids[q]), q_item.label, results))
        return rows

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        ids, emb = self._gathered(pl_module)
        emb_set = self._embedding_set(trainer, ids, emb, leave_one_out=False)
        split = trainer.datamodule.split
        datasets = [split.items[i].dataset for i in ids]
        rankings = rank(emb_set, max(self.k), exclude_same_group=self.exclude_same_video)
        self.rows = score_rows(emb_set, self.k, self.delta, self.deltas, model=self._name(pl_module),
                               rankings=rankings, datasets=datasets)
        if self.save_embeddings and trainer.is_global_zero and self.output_dir is not None:
            split = trainer.datamodule.split
            path = save_embeddings(self.output_dir / "embeddings.npz", emb_set, split.classes,
                                   [split.items[i].dataset for i in ids], model=self._name(pl_module))
            log.info("embeddings saved to %s (re-score with src/eval.py embeddings=%s)", path, path)
        for name, value in logged_metrics(self.rows, self.delta).items():
            pl_module.log(name, value, batch_size=len(ids), sync_dist=True)
        if trainer.is_global_zero and self.output_dir is not None:
            out = self.output_dir
            write_json(self.rows, out / "results.json")
            write_markdown(self.rows, out / "results.md", self.table_k, self.delta)
            np.save(out / "scored_ids.npy", ids)
            if self.pictures:
                try:
                    self._write_pictures(trainer, emb_set, rankings, split)
                except Exception as exc:  # results are written; a picture must not fail the run
                    log.warning("retrieval pictures not written: %s", exc)
            log.info("retrieval results written to %s", out)
        self._reset()
