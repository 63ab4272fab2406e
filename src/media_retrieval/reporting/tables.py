"""Result rows as results.json, results.md and a terminal table."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from media_retrieval.errors import MediaRetrievalError
from media_retrieval.utils.files import atomic_write_text


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def write_json(rows: Sequence[dict], path: str | Path) -> None:
    path = Path(path)
    try:
        atomic_write_text(
            path, json.dumps([{k: _clean(v) for k, v in r.items()} for r in rows], indent=1)
        )
    except OSError as exc:  # full disk, quota, read-only: the previous results stay as they were
        raise MediaRetrievalError(
            f"cannot write {path} ({exc.strerror or exc}); "
            f"{'the previous file is unchanged' if path.exists() else 'nothing was written'}"
        ) from exc


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def headline(rows: Sequence[dict], k: int, delta: float | None, dataset: str = "all") -> list[dict]:
    """The rows of the main table: Euclidean and PAR(delta) at k, per split, for all queries
    (or those of one test set, ``dataset``). ``delta=None`` keeps PAR rows at any δ: rows that
    are already each run's headline rows, each at its own δ."""
    return [
        r
        for r in rows
        if r["k"] == k
        and r.get("dataset", "all") == dataset
        and (r["delta"] is None or delta is None or abs(r["delta"] - delta) < 1e-9)
    ]


def to_markdown(rows: Sequence[dict], k: int, delta: float) -> str:
    from media_retrieval.retrieval.results import METRICS as REGISTERED  # noqa: PLC0415 - retrieval.results (and what it loads) stays unloaded until used
    from media_retrieval.retrieval.results import TABLE  # noqa: PLC0415 - retrieval.results (and what it loads) stays unloaded until used

    cols = ["model", "ranking", "split", "k", "delta", *TABLE]
    head = headline(rows, k, delta)
    lines = [
        f"## Top-{k} retrieval (PAR δ = {delta})",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in head]
    rest = [m for m in REGISTERED if m not in TABLE]
    all_cols = ["dataset", *[c for c in cols if c != "n_queries"], *rest, "n_queries"]
    lines += [
        "",
        "## All rows",
        "",
        "| " + " | ".join(all_cols) + " |",
        "|" + "---|" * len(all_cols),
    ]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in all_cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_markdown(rows: Sequence[dict], path: str | Path, k: int, delta: float) -> None:
    atomic_write_text(path, to_markdown(rows, k, delta))


def print_table(rows: Sequence[dict], k: int, delta: float, title: str | None = None) -> None:
    """Rows = metrics, columns = {Euclidean, PAR} x {seen, unseen, all} (the paper's Table IV)."""
    from rich.console import Console  # noqa: PLC0415 - rich stays unloaded until used
    from rich.table import Table  # noqa: PLC0415 - rich stays unloaded until used

    from media_retrieval.retrieval.rankers import label  # noqa: PLC0415 - retrieval.rankers (and what it loads) stays unloaded until used
    from media_retrieval.retrieval.results import TABLE  # noqa: PLC0415 - retrieval.results (and what it loads) stays unloaded until used

    head = headline(rows, k, delta)
    cols = [(r["ranking"], r["split"]) for r in head]
    table = Table(title=title or f"Top-{k} retrieval (EU = Euclidean, PAR δ = {delta})")
    table.add_column("metric")
    for ranking, split in cols:
        table.add_column(f"{label(ranking)} {split}", justify="right")
    for m in TABLE:
        table.add_row(m, *[_fmt(r.get(m)) for r in head])
    Console(width=120).print(table)


def best_par_rows(rows: Sequence[dict], max_empty: float = 0.05) -> dict[tuple[str, int], dict]:
    """Per (split, k), the PAR row with the highest accuracy (hits per kept item, the paper's
    headline metric) among the δ that leave at most ``max_empty`` of the queries with an empty
    list (ties: the smaller δ).

    Why the constraint: accuracy over kept items alone is maximised by a δ that throws nearly
    every result away, and P@k (hits / k) can only fall as δ rises, so neither alone picks a
    useful δ. Give it *validation* rows: a δ picked on the test pool inflates the test numbers.
    """
    best = {}
    for split in ("all", "seen", "unseen"):
        for k in sorted({r["k"] for r in rows}):
            cands = [
                r
                for r in rows
                if r["ranking"] == "par"
                and r["split"] == split
                and r["k"] == k
                and r.get("dataset", "all") == "all"
                and r["accuracy"] == r["accuracy"]
                and r["empty_share"] <= max_empty + 1e-12
            ]
            if cands:
                best[split, k] = max(cands, key=lambda r: (r["accuracy"], -r["delta"]))
    return best


def best_delta_table(
    val_rows: Sequence[dict] | None,
    test_rows: Sequence[dict] | None = None,
    max_empty: float = 0.05,
) -> str:
    """Best PAR δ per k chosen on ``val_rows``; with ``test_rows``, the test numbers at that δ
    (the test pool is reported, never used to choose)."""
    if not val_rows:
        return (
            "## Best PAR δ per k\n\nNot chosen: no validation embeddings. δ is chosen on "
            "validation clips "
            "only; save them with `python src/eval.py ckpt_path=... save_embeddings=true` "
            "(val_embeddings.npz).\n"
        )
    cols = "| split | k | best δ (validation) | val accuracy | val empty_share |"
    if test_rows is not None:
        cols += " test accuracy | test Euclidean accuracy | test p_at_k | test empty_share |"
    lines = [
        "## Best PAR δ per k, chosen on validation (highest accuracy with empty_share <= "
        f"{max_empty})",
        "",
        cols,
        "|" + "---|" * (cols.count("|") - 1),
    ]
    key = {
        (
            r["split"],
            r["k"],
            r["ranking"],
            r["delta"] if r["delta"] is None else round(r["delta"], 6),
        ): r
        for r in (test_rows or [])
        if r.get("dataset", "all") == "all"
    }
    for (split, k), best in best_par_rows(val_rows, max_empty).items():
        line = (
            f"| {split} | {k} | {best['delta']:.2f} | {best['accuracy']:.4f} "
            f"| {best['empty_share']:.4f} |"
        )
        if test_rows is not None:
            t = key.get((split, k, "par", round(best["delta"], 6)))
            e = key.get((split, k, "euclidean", None))
            if t is None:
                continue  # e.g. no seen/unseen split among the test rows
            line += (
                f" {_fmt(t['accuracy'])} | {_fmt(e['accuracy'] if e else None)} | "
                f"{_fmt(t['p_at_k'])} | "
                f"{_fmt(t['empty_share'])} |"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def print_results(results_dir: Path, k: int, delta: float, title: str | None = None) -> list[dict]:
    path = results_dir / "results.json"
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    rows = [
        {kk: (float("nan") if v is None and kk != "delta" else v) for kk, v in r.items()}
        for r in rows
    ]
    print_table(rows, k, delta, title)
    print(f"results: {path} and {results_dir / 'results.md'}")
    return rows
