"""One markdown report from many runs (``src/report.py``): the paper's tables with our numbers
beside the paper's, the ablation table, Fig. 4, the δ plot and the PCA curve.

A *run* is a folder holding ``retrieval/results.json`` (written by the retrieval callback or
``src/eval.py``) and ``.hydra/`` (config and overrides); a failed sweep job holds
``error.txt`` instead. Give run folders or the folders above them (a multirun).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from media_retrieval.config.retrieval import DEFAULT_DELTA, resolve_delta
from media_retrieval.errors import ConfigError
from media_retrieval.models.cost import COST_FILE
from media_retrieval.reporting import figures
from media_retrieval.reporting.figures import METRICS as TABLE_IV_METRICS
from media_retrieval.reporting.figures import _plt
from media_retrieval.reporting.run_outputs import DELTA_FILE
from media_retrieval.reporting.tables import _fmt, headline
from media_retrieval.retrieval.backends import PCAProjection
from media_retrieval.retrieval.evaluate import rank, score_rows

log = logging.getLogger(__name__)

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
METRICS = ("accuracy", "precision", "recall", "f1")
IGNORED_OVERRIDES = (
    "hydra.",
    "paths.",
    "logger",
    "trainer.accelerator",
    "hparams_search",
    "ablation",
    "data.root",
    "data.corpus.",
    "data.num_workers",
    "data.batch_size",
    "data.eval_batch_size",
    "save_embeddings",
    "measure_cost",
)


@dataclass
class Run:
    path: Path
    rows: list[dict] = field(default_factory=list)
    overrides: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    error: str | None = None
    recorded_delta: float | None = None  # the δ its test used (retrieval/delta.json), if it says
    delta: float = DEFAULT_DELTA  # the δ its PAR columns show: set by write_report

    @property
    def model(self) -> str:
        return str(
            (self.config.get("model") or {}).get("name")
            or (self.rows[0]["model"] if self.rows else "?")
        )

    @property
    def tags(self) -> list[str]:
        return list(self.config.get("tags") or [])


def _read(path: Path, parse: Callable[[str], Any], kind: type, run: Run) -> Any:
    """A run's file as data: damaged or of the wrong shape, the run is reported as failed with
    one line saying which file and why, never the whole report."""
    try:
        value = parse(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        run.error = (
            f"{path.relative_to(run.path)} cannot be read ({str(exc).splitlines()[0][:120]})"
        )
        log.warning("%s: %s", run.path, run.error)
        return None
    if value is not None and not isinstance(value, kind):
        run.error = f"{path.relative_to(run.path)} is not a {kind.__name__}"
        log.warning("%s: %s", run.path, run.error)
        return None
    return value


def _load_run(d: Path) -> Run:
    run = Run(d)
    hyd = d / ".hydra"
    if (hyd / "overrides.yaml").is_file():
        for o in _read(hyd / "overrides.yaml", yaml.safe_load, list, run) or []:
            key, _, value = str(o).lstrip("+~").partition("=")
            run.overrides[key] = value
    if (hyd / "config.yaml").is_file():
        run.config = _read(hyd / "config.yaml", yaml.safe_load, dict, run) or {}
    if (d / "error.txt").is_file():
        run.error = (d / "error.txt").read_text(errors="replace").strip()
    res = d / "retrieval" / "results.json"
    if res.is_file():
        rows = _read(res, json.loads, list, run) or []
        if all(isinstance(r, dict) for r in rows):
            run.rows = rows
        else:
            run.error = "retrieval/results.json holds rows that are not objects"
    if (d / "retrieval" / DELTA_FILE).is_file():
        try:  # data: a damaged file means no record (the default δ), never a failed report
            recorded = json.loads((d / "retrieval" / DELTA_FILE).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning(
                "%s: %s cannot be read (%s): its PAR columns use the default δ", d, DELTA_FILE, exc
            )
            recorded = None
        run.recorded_delta = recorded.get("delta") if isinstance(recorded, dict) else None
    return run


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Run folders at or below each path (results.json or error.txt), in path order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"runs: {p} does not exist")
        cands = [p] + sorted(q for q in p.rglob("*") if q.is_dir() and not q.name.startswith("."))
        for c in cands:
            if (
                (c / "retrieval" / "results.json").is_file() or (c / "error.txt").is_file()
            ) and c not in found:
                found.append(c)
    if not found:
        raise ConfigError(
            "no run folders (retrieval/results.json or error.txt) under "
            f"{', '.join(map(str, paths))}"
        )
    runs = [_load_run(d) for d in found]
    return sorted(runs, key=lambda r: (_num(r.path.name), str(r.path)))


def _num(name: str) -> int:
    return int(name) if name.isdigit() else 10**9


def _head(rows: list[dict], k: int, delta: float, ranking: str, split: str) -> dict | None:
    """The headline row (Euclidean, or PAR at ``delta``) of one ranking and split at ``k``."""
    return next(
        (r for r in headline(rows, k, delta) if r["ranking"] == ranking and r["split"] == split),
        None,
    )


def varying_keys(runs: list[Run]) -> list[str]:
    """The overrides that differ between runs: what names a variant."""
    keys = sorted({k for r in runs for k in r.overrides if not k.startswith(IGNORED_OVERRIDES)})
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1] or [
        k for k in keys if any(k in r.overrides for r in runs)
    ]


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
    names = _run_names(runs)
    for r in runs:
        vals = [names[r.path], *[r.overrides.get(key, "·") for key in keys]]
        if r.error:
            lines.append(
                "| " + " | ".join(vals + [f"failed: {r.error[:80]}"] + [""] * (len(cols))) + " |"
            )
            continue
        for rk, sp in cols:
            h = _head(r.rows, k, r.delta, rk, sp)
            vals.append(_fmt(h["accuracy"]) if h else "–")
        h = _head(r.rows, k, r.delta, "euclidean", "all")
        vals.append(_fmt(h.get("map")) if h else "–")
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


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


def variants(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by variant: the model and the overrides that tell runs apart, seeds aside
    (``experiment=paper_real`` and its mirror are two variants of each model)."""
    done = [r for r in runs if r.rows and not r.error]
    keys = [key for key in varying_keys(done) if key not in ("seed", "model")]  # model: named
    groups: dict[str, list[Run]] = {}
    for r in done:
        parts = [r.model, *(f"{key}={r.overrides[key]}" for key in keys if key in r.overrides)]
        groups.setdefault(" · ".join(parts), []).append(r)
    return groups


def _seed_mean(
    members: list[Run], k: int, split: str, dataset: str = "all", metrics=TABLE_IV_METRICS
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """{ranking: (mean, spread, seeds)} of ``metrics`` over the variant's runs (the headline rows
    of ``split`` and ``dataset``; a metric a run lacks is NaN and left out)."""
    found: dict[str, list[list]] = {}
    for r in members:
        for row in r.rows:
            if (
                row["k"] == k
                and row["split"] == split
                and row.get("dataset", "all") == dataset
                and (row["delta"] is None or abs(row["delta"] - r.delta) < 1e-9)
            ):
                found.setdefault(row["ranking"], []).append([row.get(m) for m in metrics])
    out = {}
    for ranking, values in found.items():
        arr = np.array(values, dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a metric no seed has: NaN
            out[ranking] = (np.nanmean(arr, axis=0), np.nanstd(arr, axis=0), len(values))
    return out


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
            + ("plateaued" if flat else "still rising, not evidence on 2D vs 3D")
        )
    return f"budget-limited ({limited}); " + "; ".join(said)


def _val_map_curve(run_dir: Path) -> list[float]:
    """Validation mAP per epoch from the run's CSV log (the metric checkpoints are chosen by)."""
    for path in sorted(run_dir.glob("csv/*/metrics.csv")):
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        head = lines[0].split(",") if lines else []
        col = "val/retrieval/euclidean/all/map"
        if col not in head:
            continue
        i = head.index(col)
        return [
            float(cells[i])
            for cells in (ln.split(",") for ln in lines[1:])
            if len(cells) > i and cells[i]
        ]
    return []


def _run_names(runs: list[Run]) -> dict[Path, str]:
    """Each run's folder below the runs' common folder (``features/3``, ``pixels/0``), or its
    own name when they share one parent (a multirun's job numbers)."""
    paths = [r.path.resolve() for r in runs]
    if len({p.parent for p in paths}) <= 1:
        return {r.path: r.path.name for r in runs}
    common = Path(os.path.commonpath(paths))
    return {r.path: p.relative_to(common).as_posix() for r, p in zip(runs, paths, strict=True)}


def table_iv(runs: list[Run], k: int) -> str:
    """The paper's Table IV layout, one table per query group (seen, seen held out, unseen and
    its Kinetics halves): a row per variant x ranking, the four top-k metrics as the mean over
    the variant's seeds ± their spread (population standard deviation), the paper's value in
    brackets where the paper has the model and the group."""
    groups = variants(runs)
    seeds = max((len(m) for m in groups.values()), default=0)
    note = f" Means over up to {seeds} seeds, ± their spread." if seeds > 1 else ""
    parts = [f"The paper's Table IV value in brackets (its k = 5).{note}\n"]
    for split, title in TABLE_IV_SPLITS.items():
        lines = []
        for name, members in groups.items():
            means = _seed_mean(members, k, split)
            paper_model = PAPER_COUNTERPART.get(members[0].model, members[0].model)
            for ranking in ("euclidean", "par"):
                if ranking not in means:
                    continue
                mean, spread, n = means[ranking]
                paper = PAPER_TABLE_IV.get((paper_model, ranking, split), {})
                cells = [
                    _cell(mean[i], spread[i], n, paper.get(m))
                    for i, m in enumerate(TABLE_IV_METRICS)
                ]
                label = f"{name} {'EU' if ranking == 'euclidean' else 'PAR'}"
                lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
        if lines:
            head = "| variant | seeds | " + " | ".join(TABLE_IV_METRICS) + " |"
            parts.append(
                f"### {title}, top-{k}\n\n{head}\n|---|---|" + "---|" * len(TABLE_IV_METRICS)
            )
            parts.append("\n".join(lines) + "\n")
    notes = [f"- {name}: {budget_note(m)}" for name, m in groups.items() if budget_note(m)]
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
            present = {
                row["split"] for r in members for row in r.rows if row.get("dataset") == dataset
            }
            # "all" only where the set's queries fall in more than one group
            for split in [s for s in ("all", *TABLE_IV_SPLITS) if s in present][
                int(len(present) == 2) :
            ]:
                means = _seed_mean(
                    members, k, split, dataset, (*TABLE_IV_METRICS, "map", "n_queries")
                )
                if "euclidean" not in means:
                    continue
                eu, eu_spread, n = means["euclidean"]
                par = means.get("par", (np.full(6, np.nan), None, 0))[0]
                lines.append(
                    f"| {name} | {dataset} | {split} | {int(eu[5])} | "
                    f"{_cell(eu[0], eu_spread[0], n)} | {_cell(par[0], np.nan, 1)} | "
                    f"{_cell(eu[4], eu_spread[4], n)} |"
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
                for ranking, (mean, _, _) in _seed_mean(members, k, split).items():
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
        h = _head(r.rows, 100, r.delta, "euclidean", "unseen") or _head(
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
    lines = []
    for name, members in variants(runs).items():
        costs = []
        for r in members:
            path = r.path / "retrieval" / COST_FILE
            cost = _read(path, json.loads, dict, replace(r)) if path.is_file() else None
            if cost:
                costs.append(cost)
        if not costs:
            continue

        def mean(key: str, digits: int = 3, costs=costs) -> str:
            vals = [float(c[key]) for c in costs if isinstance(c.get(key), (int, float))]
            return "–" if not vals else f"{round(float(np.mean(vals)), digits):g}"

        paper = PAPER_TABLE_III.get(PAPER_COUNTERPART.get(members[0].model, members[0].model))
        train_min = mean("train_s", 1)
        train_min = "–" if train_min == "–" else f"{float(train_min) / 60:.1f}"
        lines.append(
            f"| {name} | {mean('params_m', 2)} M"
            + (f" ({paper['params_m']} M)" if paper else "")
            + f" | {mean('weights_mb', 1)}"
            + (f" ({paper['size_mb']})" if paper else "")
            + f" | {mean('embed_s')} s, {costs[0].get('clip', '?')}"
            + (f" ({paper['embed_s']} s, 16 frames)" if paper else "")
            + f" | {train_min} min, {mean('epochs', 1)} epochs, {mean('train_clips', 0)} clips"
            + (f" ({paper['train_h']} h, GPU)" if paper else "")
            + f" | {len(costs)} |"
        )
    if not lines:
        return None
    head = (
        "The paper's value in brackets. Embedding: CPU seconds per clip at batch 1, decoding "
        f"excluded ({costs[0].get('torch_threads', '?')} torch threads).\n\n"
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
        h = _head(rows, k, DEFAULT_DELTA, "euclidean", "all")
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
