"""Retrieval metrics with exact definitions (see the README's "Metrics" section).

Inputs are per-query arrays over a (possibly filtered) top-k list:
``hits`` (Q, k) bool, the retrieved item has the query's class; ``kept`` (Q, k) bool, the item
survives PAR (all True for plain Euclidean top-k); ``retrieved`` (Q, k) int, the retrieved
items' class ids; ``query_labels`` (Q,) int.

- accuracy@k: mean, over queries whose kept list is non-empty, of hits / items kept.
  Queries left with nothing count only in ``empty_share``.
- precision / recall / F1: macro averages over all (query class, retrieved class) pairs of
  kept items, labels = the union of both, a label with no predictions (or no truths) scoring 0
  -- exactly sklearn's ``precision_recall_fscore_support(average="macro", zero_division=0)``,
  computed here with bincounts because the PAR grid evaluates it hundreds of times.
- map: mean over queries of average precision over the full Euclidean ranking (the query
  itself excluded); a query with no relevant gallery item has AP 0.

Standard IR metrics (R = number of relevant gallery items of a query, hits counted among the
*kept* top-k items, so PAR's shorter lists are compared on the same k):

- p_at_k: hits / k.   r_at_k: hits / R.   ndcg_at_k: DCG of the kept list (binary gains,
  1 / log2(rank + 1)) over the ideal DCG of min(R, k) hits.
- r_precision: precision among the first R of the full ranking.
- map_at_r: mean over ranks i <= R of P@i * rel_i, divided by R (Musgrave et al. 2020).
Queries with R = 0 score 0 in every metric (they cannot be answered right).
"""

from __future__ import annotations

import numpy as np


def accuracy_at_k(hits: np.ndarray, kept: np.ndarray) -> tuple[float, float]:
    """(accuracy, empty_share)."""
    n_kept = kept.sum(1)
    nonempty = n_kept > 0
    empty_share = float(1.0 - nonempty.mean()) if len(n_kept) else float("nan")
    if not nonempty.any():
        return float("nan"), empty_share
    acc = (hits & kept).sum(1)[nonempty] / n_kept[nonempty]
    return float(acc.mean()), empty_share


def macro_prf(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """Macro precision, recall, F1 over paired labels (sklearn semantics, zero_division=0)."""
    if len(y_true) == 0:
        return 0.0, 0.0, 0.0
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.min() < 0 or y_pred.min() < 0:  # class ids are >= 0 here; stay exact otherwise
        labels = np.union1d(y_true, y_pred)
        y_true, y_pred = np.searchsorted(labels, y_true), np.searchsorted(labels, y_pred)
    n = int(max(y_true.max(), y_pred.max())) + 1
    tp = np.bincount(y_true[y_true == y_pred], minlength=n).astype(float)
    n_pred = np.bincount(y_pred, minlength=n).astype(float)
    n_true = np.bincount(y_true, minlength=n).astype(float)
    present = (n_pred > 0) | (n_true > 0)  # labels = union of true and predicted
    tp, n_pred, n_true = tp[present], n_pred[present], n_true[present]
    n = len(tp)
    prec = np.divide(tp, n_pred, out=np.zeros(n), where=n_pred > 0)
    rec = np.divide(tp, n_true, out=np.zeros(n), where=n_true > 0)
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros(n), where=denom > 0)
    return float(prec.mean()), float(rec.mean()), float(f1.mean())


def pair_prf(
    query_labels: np.ndarray, retrieved: np.ndarray, kept: np.ndarray
) -> tuple[float, float, float]:
    y_true = np.broadcast_to(query_labels[:, None], retrieved.shape)[kept]
    return macro_prf(y_true, retrieved[kept])


def topk_ir(
    hits: np.ndarray, kept: np.ndarray, n_relevant: np.ndarray, k: int
) -> tuple[float, float, float]:
    """(P@k, R@k, nDCG@k) means over queries, counting hits only among kept items."""
    good = (hits & kept).astype(float)
    n_hit = good.sum(1)
    p = n_hit / k
    r = np.divide(n_hit, n_relevant, out=np.zeros_like(n_hit), where=n_relevant > 0)
    discount = 1.0 / np.log2(np.arange(2, good.shape[1] + 2))
    dcg = (good * discount).sum(1)
    ideal_n = np.minimum(n_relevant, k).astype(int)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])[ideal_n]
    ndcg = np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)
    return float(p.mean()), float(r.mean()), float(ndcg.mean())


def full_ranking_metrics(relevant_sorted: np.ndarray, levels: int = 11) -> dict[str, np.ndarray]:
    """AP, R-precision, mAP@R and the interpolated PR curve per row of a (Q, G) relevance matrix
    in rank order, from the positions of the relevant items only (they are a small share of
    the gallery, so this is far cheaper than cumulative sums over the whole matrix)."""
    q, _ = relevant_sorted.shape
    rows, cols = np.nonzero(relevant_sorted)
    n_rel = np.bincount(rows, minlength=q)
    start = np.concatenate([[0], np.cumsum(n_rel)[:-1]])
    hits = np.arange(len(rows)) - start[rows] + 1  # relevant items found so far, this one included
    prec = hits / (cols + 1)
    r_of_row = n_rel[rows]
    safe = np.maximum(n_rel, 1)
    ap = np.bincount(rows, weights=prec, minlength=q) / safe
    within_r = cols < r_of_row
    r_precision = np.bincount(rows, weights=within_r, minlength=q) / safe
    map_at_r = np.bincount(rows, weights=prec * within_r, minlength=q) / safe
    # interpolated PR: precision envelope (max precision at this or a later relevant item)
    width = int(n_rel.max()) if q and n_rel.max() > 0 else 1
    env = np.zeros((q, width))
    env[rows, hits - 1] = prec
    env = np.maximum.accumulate(env[:, ::-1], axis=1)[:, ::-1]
    pr = np.zeros((q, levels))
    for j, r in enumerate(np.linspace(0, 1, levels)):
        need = np.ceil(r * n_rel - 1e-9).astype(int)  # hits needed to reach recall r
        idx = np.clip(need - 1, 0, width - 1)
        pr[:, j] = np.where(n_rel > 0, env[np.arange(q), idx], 0.0)
    return {
        "ap": ap,
        "r_precision": r_precision,
        "map_at_r": map_at_r,
        "pr11": pr,
        "n_relevant": n_rel,
    }
