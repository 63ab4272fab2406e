"""What an evaluation writes to its run folder: results.json/.md, the scored ids, saved
embeddings, Table IV, Fig. 4, the δ plot, the PR curve and a retrieval gallery (and the same
pictures to W&B when it logs). Called by the retrieval callback on rank 0."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from media_retrieval.config.retrieval import DeltaChoice
from media_retrieval.reporting import figures
from media_retrieval.reporting.tables import write_json, write_markdown
from media_retrieval.retrieval.embeddings_io import save_embeddings
from media_retrieval.retrieval.evaluate import EmbeddingSet, Rankings
from media_retrieval.utils.files import atomic_write_text

log = logging.getLogger(__name__)

#: a run's tested δ and where it came from, beside its results.json
DELTA_FILE = "delta.json"


def write_embeddings(out: Path, emb: EmbeddingSet, split: Any, model: str, role: str) -> Path:
    """``embeddings.npz`` (test) or ``val_embeddings.npz`` (validation: where δ is chosen)."""
    name = "val_embeddings.npz" if role == "val" else "embeddings.npz"
    path = save_embeddings(
        out / name,
        emb,
        split.classes,
        [split.items[i].dataset for i in emb.ids],
        model=model,
        role=role,
    )
    log.info(
        "%s embeddings saved to %s (re-score with src/eval.py embeddings=%s)", role, path, path
    )
    return path


def write_test_outputs(
    out: Path,
    rows: Sequence[dict],
    emb: EmbeddingSet,
    rankings: Rankings,
    split: Any,
    *,
    table_k: int,
    delta: DeltaChoice,
    pictures: bool = True,
    gallery_queries: int = 6,
    loggers: Sequence[Any] = (),
) -> None:
    """results.json (every row), the run's δ (delta.json: what the report reads as this run's
    headline δ), results.md and the pictures."""
    write_json(rows, out / "results.json")
    atomic_write_text(out / DELTA_FILE, json.dumps({"delta": delta.value, "how": delta.how}))
    write_markdown(rows, out / "results.md", table_k, delta.value)
    np.save(out / "scored_ids.npy", np.asarray(emb.ids))
    if pictures:
        try:
            write_pictures(
                out, rows, emb, rankings, split, table_k, delta.value, gallery_queries, loggers
            )
        except Exception as exc:  # results are written; a picture must not fail the run
            log.warning("retrieval pictures not written: %s", exc)
    log.info("retrieval results written to %s", out)


def write_pictures(
    out: Path,
    rows: Sequence[dict],
    emb: EmbeddingSet,
    rankings: Rankings,
    split: Any,
    table_k: int,
    delta: float,
    gallery_queries: int,
    loggers: Sequence[Any] = (),
) -> None:
    """Table IV markdown, Fig. 4, δ plot, PR curve and a retrieval gallery (+ W&B)."""
    (out / "table_iv.md").write_text(figures.table_iv_markdown(rows, table_k, delta))
    pngs = {
        "fig4": figures.fig4_bars(rows, table_k, delta, out / "fig4.png"),
        "delta": figures.delta_plot(rows, table_k, out / "delta.png"),
    }
    q_seen = emb.seen[rankings.query_rows]
    curves = {
        name: rankings.pr11[sel].mean(0)
        for name, sel in (("all", np.ones_like(q_seen)), ("seen", q_seen), ("unseen", ~q_seen))
        if sel.any()
    }
    pngs["pr_curve"] = figures.pr_curve(curves, out / "pr_curve.png")
    pngs["gallery"] = figures.gallery_png(
        gallery_rows(emb, rankings, split, table_k, gallery_queries), out / "gallery.png"
    )
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            lg.log_image(
                key="retrieval/pictures", images=[str(p) for p in pngs.values()], caption=list(pngs)
            )
            cols = sorted({c for r in rows for c in r})
            lg.log_table(
                key="retrieval/results", columns=cols, data=[[r.get(c) for c in cols] for r in rows]
            )


def gallery_rows(
    emb: EmbeddingSet, rankings: Rankings, split: Any, table_k: int, n_queries: int
) -> list:
    """A few queries with their top-k: (thumbnail, label, [(thumbnail, label, same class)])."""
    from media_retrieval.reporting.search_output import thumbnail  # noqa: PLC0415 - reporting.search_output (and what it loads) stays unloaded until used

    def thumb(sample_id: int) -> np.ndarray:
        it = split.items[sample_id]
        return thumbnail(it.path, it.start_s, it.end_s)  # a chunk shows its own span

    out = []
    step = max(len(rankings.query_rows) // n_queries, 1)
    for qi in list(range(0, len(rankings.query_rows), step))[:n_queries]:
        q = rankings.query_rows[qi]
        results = [
            (thumb(emb.ids[g]), split.items[emb.ids[g]].label, bool(emb.labels[g] == emb.labels[q]))
            for g, ok in zip(rankings.topk[qi, :table_k], rankings.valid[qi, :table_k], strict=True)
            if ok
        ]
        out.append((thumb(emb.ids[q]), split.items[emb.ids[q]].label, results))
    return out
