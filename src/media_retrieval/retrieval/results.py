"""The result row: what each metric is called in ``results.json``, in the logs and in tables.

One row per (model, dataset, ranking, split, k, delta). Its metric columns come from one
registry, in the order they are registered; each entry says how the value is computed, under
which name it is logged (``retrieval/<ranking>/<split>/<logged>@<k>``; metrics of the full
ranking carry no ``@k`` and are logged once, for the full-ranking method), and whether the
terminal and markdown tables show it (:data:`TABLE`). A new metric is one decorated function
(docs/extending.md); definitions are in :mod:`media_retrieval.retrieval.metrics` and
docs/metrics.md. Keys are added over time, never renamed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from media_retrieval.retrieval.metrics import accuracy_at_k, pair_prf, topk_ir
from media_retrieval.retrieval.rankers import RANKERS

IDENTITY = ("model", "dataset", "ranking", "split", "k", "delta")


@dataclass
class Scored:
    """What a metric sees for one (split, k, ranking): the selected queries' kept top-k and
    their full-ranking values."""

    hits: np.ndarray  # (Q, k) bool: retrieved item has the query's class
    kept: np.ndarray  # (Q, k) bool: kept by the ranking method (and a real candidate)
    retrieved: np.ndarray  # (Q, k) class ids
    query_labels: np.ndarray  # (Q,)
    n_relevant: np.ndarray  # (Q,) relevant gallery items
    k: int
    ap: np.ndarray  # (Q,) average precision over the full ranking
    chance_q: np.ndarray  # (Q,) share of the gallery that is relevant
    r_precision_q: np.ndarray
    map_at_r_q: np.ndarray

    @cached_property
    def accuracy_empty(self) -> tuple[float, float]:
        return accuracy_at_k(self.hits, self.kept)

    @cached_property
    def prf(self) -> tuple[float, float, float]:
        return pair_prf(self.query_labels, self.retrieved, self.kept)

    @cached_property
    def ir(self) -> tuple[float, float, float]:
        return topk_ir(self.hits, self.kept, self.n_relevant, self.k)


@dataclass(frozen=True)
class Metric:
    name: str  # results.json key
    compute: Callable[[Scored], float]
    logged: str | None = None  # logged name (None: not logged)
    full_ranking: bool = False  # a value of the full ranking: no @k, logged once


METRICS: dict[str, Metric] = {}
#: metric rows of the terminal and markdown tables, in order
TABLE = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "map",
    "empty_share",
    "mean_kept",
    "chance",
    "n_queries",
)


def register_metric(
    name: str, logged: str | None = None, full_ranking: bool = False
) -> Callable[[Callable[[Scored], float]], Callable[[Scored], float]]:
    """Add a metric column to every result row (and, with ``logged``, to the logged metrics)."""

    def deco(fn: Callable[[Scored], float]) -> Callable[[Scored], float]:
        METRICS[name] = Metric(name, fn, logged, full_ranking)
        return fn

    return deco


register_metric("accuracy", "accuracy")(lambda s: s.accuracy_empty[0])
register_metric("precision", "precision")(lambda s: s.prf[0])
register_metric("recall", "recall")(lambda s: s.prf[1])
register_metric("f1", "f1")(lambda s: s.prf[2])
register_metric("map", "map", full_ranking=True)(lambda s: float(s.ap.mean()))
register_metric("n_queries")(lambda s: int(len(s.query_labels)))
register_metric("empty_share", "empty_share")(lambda s: s.accuracy_empty[1])
register_metric("mean_kept", "mean_kept")(lambda s: float(s.kept.sum(1).mean()))
register_metric("chance")(lambda s: float(s.chance_q.mean()))
register_metric("p_at_k", "p")(lambda s: s.ir[0])
register_metric("r_at_k", "r")(lambda s: s.ir[1])
register_metric("ndcg_at_k", "ndcg")(lambda s: s.ir[2])
register_metric("r_precision", "r_precision", full_ranking=True)(
    lambda s: float(s.r_precision_q.mean())
)
register_metric("map_at_r", "map_at_r", full_ranking=True)(lambda s: float(s.map_at_r_q.mean()))


@dataclass
class ResultRow:
    """One row: its identity and every registered metric's value."""

    model: str
    dataset: str
    ranking: str
    split: str
    k: int
    delta: float | None
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def score(cls, scored: Scored, **identity: Any) -> ResultRow:
        return cls(**identity, metrics={m.name: m.compute(scored) for m in METRICS.values()})

    def as_dict(self) -> dict[str, Any]:
        """The ``results.json`` form (identity columns first, then metrics in registry order)."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "ranking": self.ranking,
            "split": self.split,
            "k": int(self.k),
            "delta": self.delta,
            **self.metrics,
        }


def metric_key(row: dict, metric: str, grid: bool) -> str:
    """``retrieval/<ranking>/<split>/<logged>@<k>``, ``_d<δ>`` appended for parameter-grid values
    (the names come from the result-row registry, :mod:`media_retrieval.retrieval.results`)."""
    m = METRICS[metric]
    suffix = f"_d{row['delta']:.2f}" if grid else ""
    at = "" if m.full_ranking else f"@{row['k']}"
    return f"retrieval/{row['ranking']}/{row['split']}/{m.logged}{at}{suffix}"


def logged_metrics(rows: Sequence[dict], delta: float, grid: bool = True) -> dict[str, float]:
    """Result rows as logged metric names: each ranking method at the headline δ without suffix
    (methods without a parameter always), every other parameter value with ``_d<δ>`` (when
    ``grid``); full-ranking metrics once, for the method whose lists are the full ranking."""
    out: dict[str, float] = {}
    for row in rows:
        if row.get("dataset", "all") != "all":
            continue  # per-dataset rows live in results.json / results.md
        method = RANKERS.get(row["ranking"])
        has_param = row["delta"] is not None
        headline = not has_param or abs(row["delta"] - delta) < 1e-9
        for m in METRICS.values():
            v = row.get(m.name)
            if (
                m.logged is None
                or v is None
                or math.isnan(v)
                or (m.full_ranking and not (method is not None and method.full_ranking))
            ):
                continue
            if headline:
                out[metric_key(row, m.name, grid=False)] = v
            if has_param and grid:
                out[metric_key(row, m.name, grid=True)] = v
    return out
