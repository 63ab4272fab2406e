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
    labels = np.union1d(y_true, y_pred)
    t = np.searchsorted(labels, y_true)
    p = np.searchsorted(labels, y_pred)
    n = len(labels)
    tp = np.bincount(t[t == p], minlength=n).astype(float)
    n_pred = np.bincount(p, minlength=n).astype(float)
    n_true = np.bincount(t, minlength=n).astype(float)
    prec = np.divide(tp, n_pred, out=np.zeros(n), where=n_pred > 0)
    rec = np.divide(tp, n_true, out=np.zeros(n), where=n_true > 0)
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros(n), where=denom > 0)
    return float(prec.mean()), float(rec.mean()), float(f1.mean())


def pair_prf(query_labels: np.ndarray, retrieved: np.ndarray, kept: np.ndarray) -> tuple[float, float, float]:
    y_true = np.broadcast_to(query_labels[:, None], retrieved.shape)[kept]
    return macro_prf(y_true, retrieved[kept])


def average_precision(relevant_sorted: np.ndarray) -> np.ndarray:
    """AP per row of a (Q, G) relevance matrix in rank order; 0 where a row has no relevant."""
    rel = relevant_sorted.astype(float)
    n_rel = rel.sum(1)
    cum = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    ap_sum = (rel * cum / ranks).sum(1)
    return np.divide(ap_sum, n_rel, out=np.zeros_like(ap_sum), where=n_rel > 0)
