"""One markdown report from many runs (``src/report.py``): the ablation table, the paper's
tables with our numbers beside the paper's (:mod:`.paper_tables`), Fig. 4, the δ plot and the
PCA curve.

A *run* is a folder holding ``retrieval/results.json`` (written by the retrieval callback or
``src/eval.py``) and ``.hydra/`` (config and overrides); a failed sweep job holds
``error.txt`` instead. Give run folders or the folders above them (a multirun); reading them is
:mod:`.runs`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from media_retrieval.config.retrieval import DEFAULT_DELTA, resolve_delta
from media_retrieval.errors import ConfigError
from media_retrieval.reporting import figures
from media_retrieval.reporting.figures import _plt
from media_retrieval.reporting.paper_tables import (
    fig4_figures,
    per_source_table,
    table_ii,
    table_iii,
    table_iii_from_runs,
    table_iv,
)
from media_retrieval.reporting.runs import Run, find_runs, head_row, run_names, varying_keys
from media_retrieval.reporting.tables import _fmt
from media_retrieval.retrieval.backends import PCAProjection
from media_retrieval.retrieval.evaluate import rank, score_rows

__all__ = ["Run", "find_runs", "pca_study", "run_report", "write_report"]

log = logging.getLogger(__name__)


def ablation_table(runs: list[Run], k: int) -> str:
    """One row per run: its variant (the varying overrides), then accuracy@k (hits per item
    kept: P@k for Euclidean, the paper's accuracy for PAR) and the full-ranking mAP."""
    keys = varying_keys(runs)
    held = any(row["split"] == "seen_held_out" for r in runs for row in r.rows or [])
    splits = ("seen", "seen_held_out", "unseen") if held else ("seen", "unseen")
    cols = [(rk, sp) for sp in splits for rk in ("euclidean", "par")]
    head = [
        "run",
        *keys,
        *[f"acc@{k} {'EU' if rk == 'euclidean' else 'PAR'} {sp}" for rk, sp in cols],
        "mAP all",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = run_names(runs)
    for r in runs:
        vals = [names[r.path], *[r.overrides.get(key, "·") for key in keys]]
        if r.error:
            lines.append(
                "| " + " | ".join(vals + [f"failed: {r.error[:80]}"] + [""] * (len(cols))) + " |"
            )
            continue
        for rk, sp in cols:
            h = head_row(r.rows, k, r.delta, rk, sp)
            vals.append(_fmt(h["accuracy"]) if h else "–")
        h = head_row(r.rows, k, r.delta, "euclidean", "all")
        vals.append(_fmt(h.get("map")) if h else "–")
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def pca_study(
    embeddings: Path, k: int = 5, dims: list[int] | None = None, variance: float = 0.9
) -> list[dict]:
    """P@k (Euclidean, all queries) and ranking time vs PCA dimension on saved embeddings;
    the PCA is fitted on the gallery. ``at_variance`` marks the fewest dimensions keeping
    ``variance`` of it (the paper's best practice)."""
    from media_retrieval.retrieval.embeddings_io import load_embeddings  # noqa: PLC0415 - retrieval.embeddings_io (and what it loads) stays unloaded until used

    emb, _, _, model = load_embeddings(embeddings)
    x = emb.vectors.float().numpy()
    full = PCAProjection.fit(x[emb.is_gallery], dim=x.shape[1])
    cum = np.cumsum(full.explained)
    d90 = int(np.searchsorted(cum, variance - 1e-9) + 1)
    most = len(full.explained)  # fewer gallery items than dimensions: at most that many axes
    dims = sorted({d for d in (dims or [2, 4, 8, 16, 32, 64, 128, most]) if d <= most} | {d90})
    out = []
    for d in dims:
        proj = PCAProjection(full.mean, full.components[:d], full.explained[:d])
        e = replace(emb, vectors=torch.from_numpy(proj.transform(x)))
        t = time.perf_counter()
        rk = rank(e, k)
        secs = time.perf_counter() - t
        rows = score_rows(
            e, [k], DEFAULT_DELTA, model=model, rankings=rk
        )  # only the Euclidean rows are read
        h = head_row(rows, k, DEFAULT_DELTA, "euclidean", "all")
        out.append(
            {
                "dim": d,
                "variance": round(float(cum[d - 1]), 4),
                f"precision@{k}": h["accuracy"],
                "rank_ms": round(1000 * secs, 2),
                "at_variance": d == d90,
            }
        )
    return out


def pca_plot(rows: list[dict], k: int, path: Path, variance: float = 0.9) -> Path:
    plt = _plt()
    fig, a1 = plt.subplots(figsize=(6, 3.5))
    dims = [r["dim"] for r in rows]
    a1.plot(dims, [r[f"precision@{k}"] for r in rows], marker="o", label=f"P@{k}")
    a1.set(xscale="log", xlabel="PCA dimension", ylabel=f"P@{k} (Euclidean)", ylim=(0, 1))
    a2 = a1.twinx()
    a2.plot(dims, [r["rank_ms"] for r in rows], marker="s", color="grey", label="ranking time")
    a2.set(ylabel="ranking time, ms")
    mark = next((r["dim"] for r in rows if r["at_variance"]), None)
    if mark:
        a1.axvline(
            mark, color="red", ls="--", label=f"{int(variance * 100)} % variance: {mark} dims"
        )
    a1.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(
    run_paths: list[str | Path],
    out: Path,
    k: int = 5,
    delta: float | str | None = "auto",
    table3_json: Path | None = None,
) -> Path:
    """``delta``: the PAR columns' δ; ``auto`` = each run's own (the δ its test used, as its
    ``retrieval/delta.json`` records: chosen on validation, or the default)."""
    runs = find_runs(run_paths)
    for r in runs:
        r.delta = resolve_delta(delta, r.recorded_delta).value
    deltas = sorted({r.delta for r in runs if r.rows and not r.error})
    said = (
        f"PAR δ = {deltas[0]:g}"
        if len(deltas) == 1
        else f"PAR δ = each run's own ({', '.join(f'{d:g}' for d in deltas)})"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    pics = out.parent / f"{out.stem}_figures"
    pics.mkdir(exist_ok=True)
    ok = [r for r in runs if r.rows and not r.error]
    parts = [
        f"# Retrieval report\n\n{len(runs)} runs ({len(runs) - len(ok)} failed), top-{k}, {said}.\n"
    ]
    parts.append("## Runs (ablation table)\n\n" + ablation_table(runs, k))
    t2 = table_ii(runs)
    if t2:
        parts.append("## Table II: colour vs grayscale\n\n" + t2)
    video = [r for r in ok if "table_ii" not in r.tags]
    t3 = table_iii_from_runs(video) or table_iii(table3_json)
    if t3:
        parts.append("## Table III: size and speed\n\n" + t3)
    if video:
        parts.append("## Table IV: seen / unseen, EU / PAR\n\n" + table_iv(video, k))
        sources = per_source_table(video, k)
        if sources:
            parts.append("## Table IV by test set (our addition)\n\n" + sources)
        for title, path in fig4_figures(video, k, pics):
            parts.append(f"## Fig. 4: {title}\n\n![Fig. 4]({path.relative_to(out.parent)})\n")
        best = video[0]
        if any(
            r["ranking"] == "par" and abs((r["delta"] or 0) - best.delta) > 1e-9 for r in best.rows
        ):
            dp = figures.delta_plot(best.rows, k, pics / "delta.png")
            parts.append(
                f"## PAR: precision and list length vs δ ({best.path.name})\n\n"
                f"![δ plot]({dp.relative_to(out.parent)})\n"
            )
    emb = next(
        (
            r.path / "retrieval" / "embeddings.npz"
            for r in ok
            if (r.path / "retrieval" / "embeddings.npz").is_file()
        ),
        None,
    )
    if emb is not None:
        rows = pca_study(emb, k)
        p = pca_plot(rows, k, pics / "pca.png")
        lines = [f"| dim | variance kept | P@{k} | ranking ms |", "|---|---|---|---|"]
        lines += [
            f"| {r['dim']}{' (90 %)' if r['at_variance'] else ''} | {r['variance']:.3f} | "
            f"{r[f'precision@{k}']:.4f} | {r['rank_ms']} |"
            for r in rows
        ]
        parts.append(
            f"## PCA study ({emb.parent.parent.name})\n\n"
            + "\n".join(lines)
            + f"\n\n![PCA]({p.relative_to(out.parent)})\n"
        )
    out.write_text("\n".join(parts))
    return out


def run_report(cfg) -> Path:  # noqa: ANN001 - a DictConfig; omegaconf stays out of this module's imports
    """``src/report.py``: the report of ``runs=[...]`` at ``out``, printed."""
    runs = [cfg.runs] if isinstance(cfg.runs, str) else list(cfg.runs)
    if not runs:
        raise ConfigError("runs=[...] is required: run folders or multirun folders holding them")
    out = write_report(
        runs, Path(cfg.out), int(cfg.k), cfg.delta, Path(cfg.table3) if cfg.get("table3") else None
    )
    print(out.read_text())
    print(f"report: {out}")
    return out
