"""The paper's tables from our runs, each beside the paper's numbers: Table II (colour vs
grayscale), Table III (size and speed, measured in the runs), Table IV (seen / unseen, EU /
PAR; seed means ± spread) and its per-test-set rows, and Fig. 4 per side."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from media_retrieval.models.cost import COST_FILE
from media_retrieval.reporting import figures
from media_retrieval.reporting.figures import METRICS as TABLE_IV_METRICS
from media_retrieval.reporting.runs import Run, head_row, read_run_file, seed_mean, variants
from media_retrieval.reporting.tables import _fmt

# The paper's numbers (Ravi & Nandakumar 2021), for the side-by-side columns.
PAPER_TABLE_II = {
    "color": 0.8162,
    "gray": 0.8003,
}  # top-100 retrieval accuracy, CIFAR10 untrained classes
PAPER_TABLE_III = {
    "cnn_lstm": {"params_m": 4.5, "embed_s": 0.8, "size_mb": 22.5, "train_h": 2.7},
    "c3d": {"params_m": 46.0, "embed_s": 1.2, "size_mb": 305.17, "train_h": 16.0},
}
PAPER_TABLE_IV = {  # (model, ranking, split) -> metric -> value; top-5
    ("c3d", "euclidean", "seen"): {
        "accuracy": 0.6578,
        "precision": 0.5933,
        "recall": 0.4983,
        "f1": 0.5261,
    },
    ("c3d", "par", "seen"): {
        "accuracy": 0.7316,
        "precision": 0.6675,
        "recall": 0.6015,
        "f1": 0.6222,
    },
    ("cnn_lstm", "euclidean", "seen"): {
        "accuracy": 0.7644,
        "precision": 0.7481,
        "recall": 0.6644,
        "f1": 0.6866,
    },
    ("cnn_lstm", "par", "seen"): {
        "accuracy": 0.8575,
        "precision": 0.8656,
        "recall": 0.7984,
        "f1": 0.8165,
    },
    ("c3d", "euclidean", "unseen"): {
        "accuracy": 0.5983,
        "precision": 0.4984,
        "recall": 0.3759,
        "f1": 0.4141,
    },
    ("c3d", "par", "unseen"): {
        "accuracy": 0.6414,
        "precision": 0.5462,
        "recall": 0.4303,
        "f1": 0.467,
    },
    ("cnn_lstm", "euclidean", "unseen"): {
        "accuracy": 0.7113,
        "precision": 0.6225,
        "recall": 0.5225,
        "f1": 0.5566,
    },
    ("cnn_lstm", "par", "unseen"): {
        "accuracy": 0.914,
        "precision": 0.8793,
        "recall": 0.842,
        "f1": 0.8555,
    },
}
#: Table IV's query groups, in the order the paper's columns run, with our additions
TABLE_IV_SPLITS = {
    "seen": "seen (a test set's class trained on in another set)",
    "seen_held_out": "seen, held out (clips of trained classes kept out of training)",
    "unseen": "unseen",
    "unseen_kinetics": "unseen, a Kinetics-400 class (I3D's pretraining saw it)",
    "unseen_not_kinetics": "unseen, not a Kinetics-400 class",
}
#: the paper's model each of ours stands beside (Table III / IV)
PAPER_COUNTERPART = {"cnn_lstm_paper": "cnn_lstm", "cnn_lstm_e2e": "cnn_lstm", "c3d": "c3d"}


def _cell(mean: float, spread: float, seeds: int, paper: float | None = None) -> str:
    text = "–" if mean != mean else f"{mean:.4f}"
    if seeds > 1 and spread == spread:
        text += f" ± {spread:.4f}"
    if paper is not None:
        text += f" ({paper:.4f})"
    return text


def budget_note(members: list[Run]) -> str:
    """For a budget-limited variant (``budget=cpu_*``): what was cut, and whether validation mAP
    had plateaued by the last epoch (the epoch validation chose is not the last, or the last
    gained < 0.01): only then do its rows count as evidence on 2D vs 3D."""
    limited = members[0].config.get("budget_limited")
    if not limited:
        return ""
    curves = [_val_map_curve(r.path) for r in members]
    said = []
    for curve in curves:
        if len(curve) < 2:
            said.append("validation mAP by epoch not recorded")
            continue
        best = int(np.argmax(curve))
        flat = best < len(curve) - 1 or curve[-1] - max(curve[:-1]) < 0.01
        said.append(
            f"val mAP by epoch {', '.join(f'{v:.3f}' for v in curve)}: "
            + ("plateaued" if flat else "still rising, so not evidence")
        )
    return f"budget-limited ({limited}); " + "; ".join(said)


def _val_map_curve(run_dir: Path) -> list[float]:
    """Validation mAP per epoch from the run's CSV log (the metric checkpoints are chosen by);
    a log that cannot be read or lacks the column counts as not recorded."""
    col = "val/retrieval/euclidean/all/map"
    for path in sorted(run_dir.glob("csv/*/metrics.csv")):
        try:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            if rows and col in rows[0]:
                return [float(row[col]) for row in rows if row.get(col)]
        except (OSError, UnicodeDecodeError, ValueError, csv.Error):
            continue
    return []


def table_iv(runs: list[Run], k: int) -> str:
    """The paper's Table IV layout, one table per query group (seen, seen held out, unseen and
    its Kinetics halves): a row per variant x ranking, the four top-k metrics as the mean over
    the variant's seeds ± their spread (population standard deviation), the paper's value in
    brackets where the paper has the model and the group. Our addition, last: the full
    ranking's mAP and chance (the share of a query's gallery that is relevant), since groups
    with few relevant clips per query cannot reach the same top-k numbers."""
    groups = variants(runs)
    seeds = max((len(m) for m in groups.values()), default=0)
    note = f" Means over up to {seeds} seeds, ± their spread." if seeds > 1 else ""
    metrics = (*TABLE_IV_METRICS, "map", "chance")
    parts = [f"The paper's Table IV value in brackets (its k = 5).{note}\n"]
    for split, title in TABLE_IV_SPLITS.items():
        lines = []
        for name, members in groups.items():
            means = seed_mean(members, k, split, metrics=metrics)
            paper_model = PAPER_COUNTERPART.get(members[0].model, members[0].model)
            for ranking in ("euclidean", "par"):
                if ranking not in means:
                    continue
                mean, spread, n = means[ranking]
                paper = PAPER_TABLE_IV.get((paper_model, ranking, split), {})
                cells = [_cell(mean[i], spread[i], n, paper.get(m)) for i, m in enumerate(metrics)]
                cells[-1] = _cell(mean[-1], np.nan, 1)  # chance: the pool's, no spread to show
                label = f"{name} {'EU' if ranking == 'euclidean' else 'PAR'}"
                lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
        if lines:
            head = "| variant | seeds | " + " | ".join(TABLE_IV_METRICS) + " | mAP | chance |"
            parts.append(f"### {title}, top-{k}\n\n{head}\n|---|---|" + "---|" * len(metrics))
            parts.append("\n".join(lines) + "\n")
    notes = [f"- {name}: {note}" for name, m in groups.items() if (note := budget_note(m))]
    if notes:
        parts.append("\n".join(notes) + "\n")
    return "\n".join(parts)


def per_source_table(runs: list[Run], k: int) -> str | None:
    """Our addition beside Table IV: each test set's queries apart (seed means), so one set
    cannot hide behind the pooled numbers."""
    lines = []
    for name, members in variants(runs).items():
        sets = sorted({row.get("dataset", "all") for r in members for row in r.rows} - {"all"})
        for dataset in sets:
            groups = ("seen", "seen_held_out", "unseen")  # a set's Kinetics halves: Table IV
            present = [
                g
                for g in groups
                if any(
                    row["split"] == g and row.get("dataset") == dataset for row in members[0].rows
                )
            ]
            # "all" only where the set's queries fall in more than one group
            for split in (["all"] if len(present) > 1 else []) + present:
                means = seed_mean(members, k, split, dataset, ("accuracy", "map", "n_queries"))
                if "euclidean" not in means:
                    continue
                (acc, ap, queries), (acc_spread, ap_spread, _), n = means["euclidean"]
                par_acc = means["par"][0][0] if "par" in means else np.nan
                lines.append(
                    f"| {name} | {dataset} | {split} | {int(queries)} | "
                    f"{_cell(acc, acc_spread, n)} | {_cell(par_acc, np.nan, 1)} | "
                    f"{_cell(ap, ap_spread, n)} |"
                )
    if not lines:
        return None
    head = (
        f"| variant | test set | split | queries | acc@{k} EU | acc@{k} PAR | mAP (EU, full "
        "ranking) |\n|---|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(lines) + "\n"


def fig4_figures(runs: list[Run], k: int, folder: Path) -> list[tuple[str, Path]]:
    """Fig. 4 beside the paper's, one picture per experiment (``paper_real`` and its mirror
    apart; ``fig4.png`` when the runs share one): each variant's seed means, and the paper's
    CNN + LSTM and C3D where the paper has the query group."""
    by_side: dict[str, dict[str, list[Run]]] = {}
    for name, members in variants(runs).items():
        side = str(members[0].overrides.get("experiment") or "")
        by_side.setdefault(side, {})[name] = members
    out = []
    for side, groups in by_side.items():
        panels: dict[tuple[str, str], list] = {}
        for split in TABLE_IV_SPLITS:
            for name, members in groups.items():
                label = name.replace(f" · experiment={side}", "") if side else name
                for ranking, (mean, _, _) in seed_mean(members, k, split).items():
                    panels.setdefault((ranking, split), []).append((label, mean.tolist(), False))
            for (model, ranking, sp), values in PAPER_TABLE_IV.items():
                if sp == split and (ranking, split) in panels:
                    label = f"paper {'CNN+LSTM' if model == 'cnn_lstm' else 'C3D'}"
                    vals = [values[m] for m in TABLE_IV_METRICS]
                    panels[ranking, split].append((label, vals, True))
        name = f"fig4_{side}.png" if side and len(by_side) > 1 else "fig4.png"
        title = side or "all runs"
        out.append((title, figures.fig4_beside_paper(panels, k, title, folder / name)))
    return out


def table_ii(runs: list[Run]) -> str | None:
    """Colour vs grayscale top-100 accuracy on the unseen classes, beside the paper's."""
    pair = {}
    for r in runs:
        if r.error or not r.rows or "table_ii" not in r.tags:
            continue
        chans = int(((r.config.get("model") or {}).get("backbone") or {}).get("in_chans", 3))
        h = head_row(r.rows, 100, r.delta, "euclidean", "unseen") or head_row(
            r.rows, max(x["k"] for x in r.rows), r.delta, "euclidean", "unseen"
        )
        pair["gray" if chans == 1 else "color"] = h
    if not pair:
        return None
    lines = ["| dataset | colour (paper) | grayscale (paper) |", "|---|---|---|"]
    cells = []
    for kind in ("color", "gray"):
        h = pair.get(kind)
        cells.append(f"{_fmt(h['accuracy']) if h else '–'} ({PAPER_TABLE_II[kind]:.4f})")
    k = next(iter(pair.values()))["k"] if next(iter(pair.values())) else 100
    lines.append(f"| untrained classes, top-{k} accuracy | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_iii_from_runs(runs: list[Run]) -> str | None:
    """Table III measured in the runs themselves (``measure_cost: true`` writes
    ``retrieval/cost.json``): per variant, parameters, checkpoint size, CPU seconds to embed
    one clip of the model's own spec from pixels, and training time, beside the paper's."""
    lines, threads = [], set()
    for name, members in variants(runs).items():
        costs = []
        for r in members:
            path = r.path / "retrieval" / COST_FILE
            cost = read_run_file(path, json.loads, dict, replace(r)) if path.is_file() else None
            if cost:
                costs.append(cost)
        if not costs:
            continue
        threads |= {str(c.get("torch_threads", "?")) for c in costs}

        def mean(key: str, digits: int = 3, costs=costs) -> str:
            vals = [float(c[key]) for c in costs if isinstance(c.get(key), (int, float))]
            return "–" if not vals else f"{round(float(np.mean(vals)), digits):g}"

        paper = PAPER_TABLE_III.get(PAPER_COUNTERPART.get(members[0].model, members[0].model))
        train_min = mean("train_s", 1)
        training = (
            "nothing to train"
            if all(not c.get("epochs") for c in costs)
            else f"{float(train_min) / 60:.1f} min, {mean('epochs', 1)} epochs, "
            f"{mean('train_clips', 0)} clips"
        )
        lines.append(
            f"| {name} | {mean('params_m', 2)} M"
            + (f" ({paper['params_m']} M)" if paper else "")
            + f" | {mean('weights_mb', 1)}"
            + (f" ({paper['size_mb']})" if paper else "")
            + f" | {mean('embed_s')} s, {costs[0].get('clip', '?')}"
            + (f" ({paper['embed_s']} s, 16 frames)" if paper else "")
            + f" | {training}"
            + (f" ({paper['train_h']} h, GPU)" if paper else "")
            + f" | {len(costs)} |"
        )
    if not lines:
        return None
    head = (
        "The paper's value in brackets. Embedding: CPU seconds per clip at batch 1, decoding "
        f"excluded ({', '.join(sorted(threads))} torch threads).\n\n"
        "| variant | parameters | weights MB | embed one clip | training | runs |\n"
        "|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(lines) + "\n"


def table_iii(table3_json: Path | None) -> str | None:
    """Size and speed from ``benchmarks/table3.py``'s JSON beside the paper's Table III: for
    runs that did not measure their own (``measure_cost: false``)."""
    if table3_json is None or not table3_json.is_file():
        return None
    ours = json.loads(table3_json.read_text())
    ours = ours.get("models", ours)
    lines = [
        "| model | parameters (paper) | size MB (paper) | embed 16 frames, s (paper) |",
        "|---|---|---|---|",
    ]
    for name, paper in PAPER_TABLE_III.items():
        m = ours.get(name, {})
        lines.append(
            f"| {name} | {m.get('params_m', '–')} M ({paper['params_m']} M) | "
            f"{m.get('checkpoint_mb', '–')} ({paper['size_mb']}) | "
            f"{m.get('embed_s', m.get('embed_s_16x224', '–'))} ({paper['embed_s']}) |"
        )
    return "\n".join(lines) + "\n"
