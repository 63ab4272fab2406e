"""Pictures of a retrieval run: the paper's Fig. 4, the δ trade-off, PR curves, a gallery.

matplotlib with the Agg backend (no display needed); every function writes one PNG and
returns its path, so the callback can also hand it to W&B.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from media_retrieval.reporting.tables import headline

METRICS = ("accuracy", "precision", "recall", "f1")


def _plt():
    import matplotlib  # noqa: PLC0415 - matplotlib stays unloaded until used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib stays unloaded until used

    return plt


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # nothing plotted (e.g. no PAR rows): no empty legend
        ax.legend(fontsize=8)


def table_iv_markdown(
    rows: Sequence[dict],
    k: int,
    delta: float | None,
    paper: dict[tuple[str, str, str], dict[str, float]] | None = None,
    spread: dict[tuple[str, str, str], dict[str, float]] | None = None,
) -> str:
    """The paper's Table IV layout: rows = metrics, columns = model x {EU, PAR} x {seen, unseen}.
    ``paper``: {(model, ranking, split): {metric: value}} shown in brackets beside ours.
    ``delta=None``: the rows are already each run's headline rows (each at its own δ)."""
    models = sorted({r["model"] for r in rows})
    head = {(r["model"], r["ranking"], r["split"]): r for r in headline(rows, k, delta)}
    cols = [
        (m, rk, sp)
        for sp in ("seen", "seen_held_out", "unseen")
        for m in models
        for rk in ("euclidean", "par")
        if (m, rk, sp) in head
    ]
    suffix = " (paper)" if paper is not None else ""
    lines = [
        f"Top-{k} retrieval, PAR δ = {delta}",
        "",
        "| metric | "
        + " | ".join(
            f"{m} {'EU' if rk == 'euclidean' else 'PAR'} {sp}{suffix}" for m, rk, sp in cols
        )
        + " |",
        "|---|" + "---|" * len(cols),
    ]
    for metric in METRICS:
        cells = []
        for c in cols:
            v = head[c][metric]
            cell = "–" if v is None or v != v else f"{v:.4f}"
            s = (spread or {}).get(c, {}).get(metric)
            if s is not None and s == s:
                cell += f" ± {s:.4f}"
            if paper is not None:
                p = paper.get(c, {}).get(metric)
                cell += f" ({'–' if p is None else f'{p:.4f}'})"
            cells.append(cell)
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fig4_bars(rows: Sequence[dict], k: int, delta: float, path: Path) -> Path:
    """Fig. 4: accuracy / precision / recall / F1 for EU and PAR, seen and unseen."""
    plt = _plt()
    head = {(r["ranking"], r["split"]): r for r in headline(rows, k, delta)}
    groups = [
        g
        for g in (
            ("euclidean", "seen"),
            ("par", "seen"),
            ("euclidean", "seen_held_out"),
            ("par", "seen_held_out"),
            ("euclidean", "unseen"),
            ("par", "unseen"),
        )
        if g in head
    ]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(METRICS))
    for i, g in enumerate(groups):
        vals = [np.nan_to_num(head[g][m] if head[g][m] is not None else np.nan) for m in METRICS]
        ax.bar(
            x + i * width,
            vals,
            width,
            label=f"{'EU' if g[0] == 'euclidean' else f'PAR δ={delta}'} {g[1]}",
        )
    ax.set_xticks(x + width * (len(groups) - 1) / 2, METRICS)
    ax.set_ylim(0, 1)
    ax.set_title(f"Top-{k} retrieval ({rows[0]['model'] if rows else ''})")
    _legend(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def fig4_beside_paper(
    panels: dict[tuple[str, str], list[tuple[str, Sequence[float], bool]]],
    k: int,
    title: str,
    path: Path,
) -> Path:
    """Fig. 4 for several models beside the paper's: a panel per (ranking, query group), in each
    a group of four bars (accuracy, precision, recall, F1) per model; the paper's models
    hatched. ``panels``: {(ranking, split): [(label, 4 values, is_paper)]}."""
    plt = _plt()
    rankings = [rk for rk in ("euclidean", "par") if any(p[0] == rk for p in panels)]
    splits = list(dict.fromkeys(sp for _, sp in panels))
    fig, axes = plt.subplots(
        len(rankings),
        len(splits),
        figsize=(4.2 * len(splits), 3.2 * len(rankings)),
        squeeze=False,
        sharey=True,
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, rk in enumerate(rankings):
        for j, sp in enumerate(splits):
            ax = axes[i][j]
            bars = panels.get((rk, sp), [])
            x = np.arange(len(bars))
            for m, metric in enumerate(METRICS):
                ax.bar(
                    x + (m - 1.5) * 0.2,
                    [np.nan_to_num(v[m]) for _, v, _ in bars],
                    0.2,
                    color=colours[m % len(colours)],
                    label=metric if i == j == 0 else None,
                )
                for b, (_, v, paper) in enumerate(bars):
                    if paper:  # the paper's bars: hatched over the same colour
                        ax.bar(b + (m - 1.5) * 0.2, v[m], 0.2, fill=False, hatch="///", lw=0)
            ax.set_xticks(x, [label for label, _, _ in bars], rotation=35, ha="right", fontsize=7)
            ax.set_xlim(-0.5, max(len(bars), 3) - 0.5)  # a panel of one model: bars as narrow
            ax.set_ylim(0, 1)
            ax.set_title(f"{'EU' if rk == 'euclidean' else 'PAR'} · {sp}", fontsize=9)
    fig.legend(fontsize=8, loc="upper right", ncol=len(METRICS), frameon=False)
    fig.suptitle(f"{title}: top-{k} retrieval (hatched: the paper's)", fontsize=10, x=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def delta_plot(rows: Sequence[dict], k: int, path: Path) -> Path:
    """Precision and mean number kept vs δ (PAR), per split: the δ trade-off."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in ("all", "seen", "unseen"):
        pts = sorted(
            (r["delta"], r["precision"], r["mean_kept"])
            for r in rows
            if r["ranking"] == "par"
            and r["k"] == k
            and r["split"] == split
            and r.get("dataset", "all") == "all"
        )
        if not pts:
            continue
        d, p, kept = zip(*pts, strict=True)
        a1.plot(d, p, marker="o", label=split)
        a2.plot(d, kept, marker="o", label=split)
    a1.set(xlabel="δ", ylabel=f"precision@{k}", title="PAR precision vs δ")
    a2.set(xlabel="δ", ylabel="mean items kept", title=f"PAR list length vs δ (k={k})")
    _legend(a1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pr_curve(curves: dict[str, np.ndarray], path: Path) -> Path:
    """Mean 11-point interpolated precision-recall curve of the full Euclidean ranking per split."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, curve in curves.items():
        ax.plot(np.linspace(0, 1, len(curve)), curve, marker=".", label=name)
    ax.set(
        xlabel="recall",
        ylabel="interpolated precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Precision-recall (Euclidean)",
    )
    _legend(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def gallery_png(
    queries: list[tuple[np.ndarray, str, list[tuple[np.ndarray, str, bool]]]],
    path: Path,
    thumb: int = 96,
    label_chars: int = 16,
) -> Path:
    """Each row: the query thumbnail, then its results; the flag colours the border green or red
    (evaluation: same class as the query; search: kept by PAR)."""
    from PIL import Image, ImageDraw, ImageOps  # noqa: PLC0415 - PIL stays unloaded until used

    n_cols = 1 + max((len(r) for _, _, r in queries), default=0)
    pad, label_h = 6, 14
    n_lines = 2 if label_chars > 16 else 1
    label_h *= n_lines
    canvas = Image.new(
        "RGB", (n_cols * (thumb + pad) + pad, len(queries) * (thumb + label_h + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for row, (q_img, q_label, results) in enumerate(queries):
        y = pad + row * (thumb + label_h + pad)
        cells = [(q_img, q_label, None), *results]
        for col, (img, label, right) in enumerate(cells):
            x = pad + col * (thumb + pad)
            tile = ImageOps.fit(Image.fromarray(img), (thumb - 6, thumb - 6))
            colour = "black" if right is None else ("#1a9850" if right else "#d73027")
            canvas.paste(ImageOps.expand(tile, border=3, fill=colour), (x, y))
            draw.text(
                (x, y + thumb),
                ("query: " if right is None else "") + label[:label_chars],
                fill="black",
            )
    canvas.save(path)
    return path
