"""From embeddings with roles and labels to result rows, one per (ranking, split, k, delta)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from media_retrieval.retrieval.distances import cosine, squared_euclidean
from media_retrieval.retrieval.metrics import full_ranking_metrics
from media_retrieval.retrieval.rankers import RANKERS
from media_retrieval.retrieval.results import ResultRow, Scored

#: query groups of every result row. ``seen``: classes trained on (with held-out clips, the
#: cross-set ones only); ``seen_held_out``: clips of trained classes from the training sets, kept
#: out of training (experiment=paper_real); ``unseen_kinetics`` / ``unseen_not_kinetics``: the
#: unseen queries whose class is / is not a Kinetics-400 class (a Kinetics-pretrained encoder has
#: seen the former; class map's ``kinetics400``). Rows exist only for groups that have queries
SPLITS = ("all", "seen", "seen_held_out", "unseen", "unseen_kinetics", "unseen_not_kinetics")


@dataclass
class EmbeddingSet:
    """Embeddings aligned with their metadata; ``ids`` are unique sample ids."""

    ids: np.ndarray  # (N,) int
    vectors: torch.Tensor  # (N, D)
    labels: np.ndarray  # (N,) int class ids
    seen: np.ndarray  # (N,) bool
    is_query: np.ndarray  # (N,) bool
    is_gallery: np.ndarray  # (N,) bool
    groups: np.ndarray | None = (
        None  # (N,) video ids: with exclude_same_group, a query's own chunks are not ranked
    )
    held_out: np.ndarray | None = None  # (N,) bool: seen-class clips held out of training sets
    kinetics: np.ndarray | None = None  # (N,) bool: class is a Kinetics-400 class (None: unknown)


@dataclass
class Rankings:
    """Per query: top-k gallery positions, their labels and cosines, and full-ranking AP."""

    query_rows: np.ndarray  # (Q,) row numbers into the EmbeddingSet
    topk: np.ndarray  # (Q, kmax) gallery row numbers, Euclidean order
    topk_labels: np.ndarray  # (Q, kmax)
    topk_cosine: np.ndarray  # (Q, kmax)
    topk_distance: np.ndarray  # (Q, kmax) Euclidean distances
    ap: np.ndarray  # (Q,)
    chance: np.ndarray  # (Q,) share of the query's gallery that is relevant: random P@k
    n_relevant: np.ndarray  # (Q,) R: relevant gallery items (the query itself excluded)
    r_precision: np.ndarray  # (Q,)
    map_at_r: np.ndarray  # (Q,)
    pr11: np.ndarray  # (Q, 11) interpolated precision at recall 0, 0.1, ..., 1 (full ranking)
    valid: np.ndarray  # (Q, kmax) False where the gallery had fewer than kmax candidates


# Bytes per (query, gallery item) pair while a chunk is ranked: float32 distance, int64 sort
# index, label gather and boolean masks.
_BYTES_PER_PAIR = 4 + 8 + 8 + 3


def rank(
    emb: EmbeddingSet,
    kmax: int,
    chunk_size: int | None = None,
    exclude_same_group: bool = False,
    max_chunk_bytes: int = 512 << 20,
) -> Rankings:
    """Rank the gallery for every query by Euclidean distance, the query itself excluded
    (and, with ``exclude_same_group``, the other chunks of the query's own video).

    Full-ranking metrics (mAP, R-precision, PR curves) need every gallery item's rank, so each
    chunk of queries is sorted in full; the chunk is sized to stay under ``max_chunk_bytes``
    (default 512 MiB) whatever the gallery size. For top-k alone at scale, see
    :func:`media_retrieval.retrieval.distances.topk_euclidean`.
    """
    q_rows = np.flatnonzero(emb.is_query)
    g_rows = np.flatnonzero(emb.is_gallery)
    # float32: embeddings are float32 anyway, and matmul + sort run twice as fast (benchmarks/).
    vec = emb.vectors.float()
    g = vec[g_rows]
    g_sq = (g * g).sum(-1)
    g_ids = torch.as_tensor(emb.ids[g_rows])
    g_labels = emb.labels[g_rows]
    k = min(kmax, len(g_rows))
    if chunk_size is None:
        chunk_size = int(
            min(1024, max(1, max_chunk_bytes // max(len(g_rows) * _BYTES_PER_PAIR, 1)))
        )
    names = (
        "topk",
        "labels",
        "cos",
        "dist",
        "ap",
        "chance",
        "n_relevant",
        "r_precision",
        "map_at_r",
        "pr11",
        "valid",
    )
    out = {n: [] for n in names}
    for start in range(0, len(q_rows), chunk_size):
        rows = q_rows[start : start + chunk_size]
        q = vec[rows]
        d = squared_euclidean(q, g, g_sq)
        self_mask = torch.as_tensor(emb.ids[rows])[:, None] == g_ids[None, :]
        if exclude_same_group and emb.groups is not None:
            self_mask |= torch.from_numpy(emb.groups[rows][:, None] == emb.groups[g_rows][None, :])
        d[self_mask] = math.inf
        order = torch.sort(d, dim=1, stable=True).indices
        top = order[:, :k]
        top_d = torch.gather(d, 1, top)
        valid = torch.isfinite(top_d)
        cos = cosine(q, g[top])
        order_np = order.numpy()
        labels_sorted = g_labels[order_np]
        relevant = labels_sorted == emb.labels[rows][:, None]
        relevant &= ~np.take_along_axis(self_mask.numpy(), order_np, 1)
        out["topk"].append(g_rows[top.numpy()])
        out["labels"].append(
            labels_sorted[:, :k].copy()
        )  # a copy: a view would keep the whole chunk alive
        out["cos"].append(cos.numpy())
        out["dist"].append(top_d.sqrt().numpy())
        full = full_ranking_metrics(relevant)
        n_candidates = np.maximum(len(g_rows) - self_mask.sum(1).numpy(), 1)
        out["chance"].append(full["n_relevant"] / n_candidates)
        for name in ("ap", "n_relevant", "r_precision", "map_at_r", "pr11"):
            out[name].append(full[name])
        out["valid"].append(valid.numpy())
    if not len(q_rows):
        empty = np.zeros((0, k))
        z = np.zeros(0)
        return Rankings(
            q_rows,
            empty.astype(int),
            empty.astype(int),
            empty,
            empty,
            z,
            z,
            z,
            z,
            z,
            np.zeros((0, 11)),
            empty.astype(bool),
        )
    return Rankings(q_rows, *(np.concatenate(out[n]) for n in names))


def score_rows(
    emb: EmbeddingSet,
    ks: Sequence[int],
    delta: float,
    deltas: Sequence[float] = (),
    model: str = "model",
    rankings: Rankings | None = None,
    datasets: Sequence[str] | None = None,
    exclude_same_group: bool = False,
) -> list[dict]:
    """Every result row: each registered ranking method (Euclidean top-k; PAR at ``delta`` and
    each of ``deltas``; :mod:`media_retrieval.retrieval.rankers`) for each k and split.

    Rows carry ``dataset="all"``; with ``datasets`` (one name per embedding) and queries from
    more than one dataset, the same rows follow for the queries of each dataset.
    """
    rankings = rankings or rank(emb, max(ks), exclude_same_group=exclude_same_group)
    q_labels = emb.labels[rankings.query_rows]
    q_seen = emb.seen[rankings.query_rows]
    held = np.zeros(len(emb.seen), dtype=bool) if emb.held_out is None else emb.held_out
    q_held = held.astype(bool)[rankings.query_rows]
    q_kin = None if emb.kinetics is None else emb.kinetics.astype(bool)[rankings.query_rows]
    q_data = np.array(
        ["all"] * len(q_seen) if datasets is None else np.asarray(datasets)[rankings.query_rows]
    )
    groups = ["all"] + (sorted(set(q_data)) if len(set(q_data)) > 1 else [])
    rows = []
    for dataset in groups:
        in_data = np.ones_like(q_seen, dtype=bool) if dataset == "all" else q_data == dataset
        rows += _split_rows(
            rankings,
            q_labels,
            q_seen,
            q_held,
            q_kin,
            in_data,
            ks,
            delta,
            deltas,
            model,
            str(dataset),
        )
    return rows


def _split_rows(
    rankings: Rankings,
    q_labels: np.ndarray,
    q_seen: np.ndarray,
    q_held: np.ndarray,
    q_kin: np.ndarray | None,
    in_data: np.ndarray,
    ks: Sequence[int],
    delta: float,
    deltas: Sequence[float],
    model: str,
    dataset: str,
) -> list[dict]:
    """Rows of every registered ranking method (each of its parameter values) per split and k."""
    methods = [r for cls in RANKERS.values() for r in cls.grid(delta, deltas)]
    rows = []
    groups = {
        "all": np.ones_like(q_seen, dtype=bool),
        "seen": q_seen & ~q_held,
        "seen_held_out": q_held,
        "unseen": ~q_seen,
    }
    if q_kin is not None:
        groups |= {"unseen_kinetics": ~q_seen & q_kin, "unseen_not_kinetics": ~q_seen & ~q_kin}
    for split in SPLITS:
        if split not in groups:
            continue
        sel = groups[split].astype(bool) & in_data
        if not sel.any():
            continue
        ql = q_labels[sel]
        for k in ks:
            labels = rankings.topk_labels[sel, :k]
            valid = rankings.valid[sel, :k]
            cos, dist = rankings.topk_cosine[sel, :k], rankings.topk_distance[sel, :k]
            for method in methods:
                scored = Scored(
                    hits=labels == ql[:, None],
                    kept=valid & method.keep(cos, dist),
                    retrieved=labels,
                    query_labels=ql,
                    n_relevant=rankings.n_relevant[sel],
                    k=int(k),
                    ap=rankings.ap[sel],
                    chance_q=rankings.chance[sel],
                    r_precision_q=rankings.r_precision[sel],
                    map_at_r_q=rankings.map_at_r[sel],
                )
                rows.append(
                    ResultRow.score(
                        scored,
                        model=model,
                        dataset=dataset,
                        ranking=method.name,
                        split=split,
                        k=int(k),
                        delta=method.param,
                    ).as_dict()
                )
    return rows
