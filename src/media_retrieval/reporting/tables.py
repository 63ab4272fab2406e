"""Result rows as results.json, results.md and a terminal table."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

METRICS = ("accuracy", "precision", "recall", "f1")


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def write_json(rows: Sequence[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps([{k: _clean(v) for k, v in r.items()} for r in rows], indent=1))
        os.replace(tmp, path)
    except OSError as exc:  # full disk, quota, read-only: the previous results stay as they were
        tmp.unlink(missing_ok=True)
        from media_retrieval.errors import MediaRetrievalError

        raise MediaRetrievalError(f"cannot write {path} ({exc.strerror or exc}); "
                                  f"{'the previous file is unchanged' if path.exists() else 'nothing was written'}") from exc


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def headline(rows: Sequence[dict], k: int, delta: float) -> list[dict]:
    """The rows of the main table: Euclidean and PAR(delta) at k, per split."""
    return [r for r in rows if r["k"] == k and r.get("dataset", "all") == "all"
            and (r["delta"] is None or abs(r["delta"] - delta) < 1e-9)]


def to_markdown(rows: Sequence[dict], k: int, delta: float) -> str:
    cols = ["model", "ranking", "split", "k", "delta", *METRICS, "map", "empty_share", "mean_kept", "chance",
            "n_queries"]
    head = headline(rows, k, delta)
    lines = [f"## Top-{k} retrieval (PAR δ = {delta})", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in head]
    all_cols = ["dataset", *cols[:-1], "p_at_k", "r_at_k", "ndcg_at_k", "r_precision", "map_at_r", "n_queries"]
    lines += ["", "## All rows", "", "| " + " | ".join(all_cols) + " |", "|" + "---|" * len(all_cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in all_cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_markdown(rows: Sequence[dict], path: str | Path, k: int, delta: float) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_markdown(rows, k, delta))
    os.replace(tmp, path)


def print_table(rows: Sequence[dict], k: int, delta: float, title: str | None = None) -> None:
    """Rows = metrics, columns = {Euclidean, PAR} x {seen, unseen, all} (the paper's Table IV)."""
    from rich.console import Console
    from rich.table import Table

    head = headline(rows, k, delta)
    cols = [(r["ranking"], r["split"]) for r in head]
    table = Table(title=title or f"Top-{k} retrieval (EU = Euclidean, PAR δ = {delta})")
    table.add_column("metric")
    for ranking, split in cols:
        table.add_column(f"{'EU' if ranking == 'euclidean' else 'PAR'} {split}", justify="right")
    for m in (*METRICS, "map", "empty_share", "mean_kept", "chance", "n_queries"):
        table.add_row(m, *[_fmt(r[m]) for r in head])
    Console(width=120).print(table)


def best_delta_table(rows: Sequence[dict], max_empty: float = 0.05) -> str:
    """Per split and k, the PAR δ with the highest accuracy (hits per kept item, the paper's
    headline metric) among the δ that leave at most ``max_empty`` of the queries with an empty
    list (ties: the smaller δ).

    Why the constraint: accuracy over kept items alone is maximised by a δ that throws nearly
    every result away, and P@k (hits / k) can only fall as δ rises, so neither alone picks a
    useful δ.
    """
    lines = [f"## Best PAR δ per k (highest accuracy with empty_share <= {max_empty})", "",
             "| split | k | best δ | accuracy | Euclidean accuracy | p_at_k | Euclidean p_at_k | empty_share |",
             "|---|---|---|---|---|---|---|---|"]
    eu = {(r["split"], r["k"]): r for r in rows if r["ranking"] == "euclidean" and r.get("dataset", "all") == "all"}
    for split in ("all", "seen", "unseen"):
        for k in sorted({r["k"] for r in rows}):
            cands = [r for r in rows if r["ranking"] == "par" and r["split"] == split and r["k"] == k
                     and r.get("dataset", "all") == "all" and r["accuracy"] == r["accuracy"]
                     and r["empty_share"] <= max_empty + 1e-12]
            if not cands:
                continue
            best = max(cands, key=lambda r: (r["accuracy"], -r["delta"]))
            e = eu[(split, k)]
            lines.append(f"| {split} | {k} | {best['delta']:.2f} | {best['accuracy']:.4f} | {_fmt(e['accuracy'])} | "
                         f"{best['p_at_k']:.4f} | {_fmt(e['p_at_k'])} | {best['empty_share']:.4f} |")
    return "\n".join(lines) + "\n"
