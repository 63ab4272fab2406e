"""The runs a report reads: each run folder's results, config, overrides and recorded δ, read
as data (a damaged file marks that run failed, never the report), and how runs group into
variants (a model and the overrides that tell runs apart, seeds aside)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from media_retrieval.config.retrieval import DEFAULT_DELTA
from media_retrieval.errors import ConfigError
from media_retrieval.reporting.figures import METRICS as TABLE_IV_METRICS
from media_retrieval.reporting.run_outputs import DELTA_FILE
from media_retrieval.reporting.tables import headline

log = logging.getLogger(__name__)

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


def read_run_file(path: Path, parse: Callable[[str], Any], kind: type, run: Run) -> Any:
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
        for o in read_run_file(hyd / "overrides.yaml", yaml.safe_load, list, run) or []:
            key, _, value = str(o).lstrip("+~").partition("=")
            run.overrides[key] = value
    if (hyd / "config.yaml").is_file():
        run.config = read_run_file(hyd / "config.yaml", yaml.safe_load, dict, run) or {}
    if (d / "error.txt").is_file():
        run.error = (d / "error.txt").read_text(errors="replace").strip()
    res = d / "retrieval" / "results.json"
    if res.is_file():
        rows = read_run_file(res, json.loads, list, run) or []
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


def head_row(rows: list[dict], k: int, delta: float, ranking: str, split: str) -> dict | None:
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


def variants(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by variant: the model and the overrides that tell runs apart, seeds aside
    (``experiment=paper_real`` and its mirror are two variants of each model); a side's
    variants together (sides in the order found), by model name within a side."""
    done = [r for r in runs if r.rows and not r.error]
    sides = list(dict.fromkeys(r.overrides.get("experiment", "") for r in done))
    done.sort(key=lambda r: (sides.index(r.overrides.get("experiment", "")), r.model))
    keys = [key for key in varying_keys(done) if key not in ("seed", "model")]  # model: named
    groups: dict[str, list[Run]] = {}
    for r in done:
        parts = [r.model, *(f"{key}={r.overrides[key]}" for key in keys if key in r.overrides)]
        groups.setdefault(" · ".join(parts), []).append(r)
    return groups


def seed_mean(
    members: list[Run], k: int, split: str, dataset: str = "all", metrics=TABLE_IV_METRICS
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """{ranking: (mean, spread, seeds)} of ``metrics`` over the variant's runs (the headline rows
    of ``split`` and ``dataset``; a metric a run lacks is NaN and left out)."""
    found: dict[str, list[list]] = {}
    for r in members:
        for row in headline(r.rows, k, r.delta, dataset):
            if row["split"] == split:
                found.setdefault(row["ranking"], []).append([row.get(m) for m in metrics])
    out = {}
    for ranking, values in found.items():
        arr = np.array(values, dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a metric no seed has: NaN
            out[ranking] = (np.nanmean(arr, axis=0), np.nanstd(arr, axis=0), len(values))
    return out


def run_names(runs: list[Run]) -> dict[Path, str]:
    """Each run's folder below the runs' common folder (``features/3``, ``pixels/0``), or its
    own name when they share one parent (a multirun's job numbers)."""
    paths = [r.path.resolve() for r in runs]
    if len({p.parent for p in paths}) <= 1:
        return {r.path: r.path.name for r in runs}
    common = Path(os.path.commonpath(paths))
    return {r.path: p.relative_to(common).as_posix() for r, p in zip(runs, paths, strict=True)}
