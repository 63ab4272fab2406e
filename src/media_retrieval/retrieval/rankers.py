"""Ranking methods: one interface, used by evaluation and by search alike.

Every method here re-ranks the Euclidean top-k (the paper's setting): given each query's
candidates in Euclidean order with their distances and cosines, it says which ones the query
keeps. Euclidean keeps all of them; PAR (Ravi & Nandakumar 2021) keeps those whose cosine
with the query exceeds δ. Evaluation scores every registered method (one row per method,
split, k and parameter); search flags each hit with the chosen one. A new method is one
class with ``@register_ranker`` (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from media_retrieval.config.retrieval import DEFAULT_DELTA
from media_retrieval.errors import ConfigError
from media_retrieval.retrieval.par import par_keep

RANKERS: dict[str, type[Ranker]] = {}


def register_ranker(cls: type[Ranker]) -> type[Ranker]:
    """Make a ranking method known to evaluation (result rows, logged metrics) and search."""
    RANKERS[cls.name] = cls
    return cls


class Ranker:
    """Which of a query's Euclidean top-k candidates it keeps, in Euclidean order."""

    name: ClassVar[str] = "base"
    label: ClassVar[str] = ""  # column label in tables ("EU", "PAR"); the name when empty
    full_ranking: ClassVar[bool] = (
        False  # its lists are the full Euclidean ranking (mAP etc. are logged once, here)
    )
    param: float | None = None  # the result rows' ``delta`` column (None: no parameter)

    def keep(self, cosine: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """(Q, k) bool: the candidates each query keeps (``cosine``, ``distance``: (Q, k))."""
        raise NotImplementedError

    @classmethod
    def grid(cls, delta: float, deltas: Sequence[float]) -> list[Ranker]:
        """The instances evaluation scores: one, or one per value of the parameter grid."""
        return [cls()]


@register_ranker
class Euclidean(Ranker):
    name, label, full_ranking = "euclidean", "EU", True

    def keep(self, cosine: np.ndarray, distance: np.ndarray) -> np.ndarray:
        return np.ones(cosine.shape, dtype=bool)


@register_ranker
class PAR(Ranker):
    """Proximal affinity re-ranking: keep the candidates with cosine > δ."""

    name, label = "par", "PAR"

    def __init__(self, delta: float = DEFAULT_DELTA) -> None:
        self.param = float(delta)

    def keep(self, cosine: np.ndarray, distance: np.ndarray) -> np.ndarray:
        return par_keep(torch.from_numpy(np.asarray(cosine)), self.param).numpy()

    @classmethod
    def grid(cls, delta: float, deltas: Sequence[float]) -> list[Ranker]:
        return [cls(d) for d in sorted({round(float(x), 6) for x in (*deltas, delta)})]


def make_ranker(name: str, delta: float = DEFAULT_DELTA) -> Ranker:
    """A ranker by name, with ``delta`` as its parameter when it takes one."""
    if name not in RANKERS:
        raise ConfigError(f"ranking={name!r}; valid: {', '.join(RANKERS)}")
    cls = RANKERS[name]
    grid = cls.grid(delta, [])
    return grid[0] if len(grid) == 1 else cls()


def label(name: str) -> str:
    cls = RANKERS.get(name)
    return (cls.label or cls.name) if cls else name
