"""Metric definitions against numbers worked out by hand (see the README's Metrics section)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from media_retrieval.reporting.report import Run
from media_retrieval.retrieval.evaluate import EmbeddingSet, rank, score_rows
from media_retrieval.retrieval.metrics import full_ranking_metrics, macro_prf
from media_retrieval.retrieval.par import par_rerank

# ---------------------------------------------------------------------------------------------
# Dense reference definitions: cumulative sums over the whole ranking, the textbook form. The
# evaluator uses full_ranking_metrics (positions of relevant items only); tests hold them equal.


def average_precision(relevant_sorted: np.ndarray) -> np.ndarray:
    """AP per row of a (Q, G) relevance matrix in rank order; 0 where a row has no relevant."""
    rel = relevant_sorted.astype(float)
    n_rel = rel.sum(1)
    cum = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    ap_sum = (rel * cum / ranks).sum(1)
    return np.divide(ap_sum, n_rel, out=np.zeros_like(ap_sum), where=n_rel > 0)


def r_precision_and_map_at_r(relevant_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a (Q, G) relevance matrix in rank order: (R-precision, mAP@R)."""
    rel = relevant_sorted.astype(float)
    n_rel = rel.sum(1)
    ranks = np.arange(1, rel.shape[1] + 1)
    within_r = ranks[None, :] <= n_rel[:, None]
    cum = np.cumsum(rel, axis=1)
    r_prec = np.divide((rel * within_r).sum(1), n_rel, out=np.zeros_like(n_rel), where=n_rel > 0)
    map_r = np.divide(
        (rel * within_r * cum / ranks).sum(1), n_rel, out=np.zeros_like(n_rel), where=n_rel > 0
    )
    return r_prec, map_r


def interpolated_pr(relevant_sorted: np.ndarray, levels: int = 11) -> np.ndarray:
    """Per row, the 11-point interpolated precision (max precision at recall >= r) of the full
    ranking, for precision-recall curves; rows without relevant items are all 0."""
    rel = relevant_sorted.astype(float)
    n_rel = rel.sum(1, keepdims=True)
    cum = np.cumsum(rel, axis=1)
    prec = cum / np.arange(1, rel.shape[1] + 1)
    rec = np.divide(cum, n_rel, out=np.zeros_like(cum), where=n_rel > 0)
    # max precision at or after each rank = precision envelope
    env = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((rel.shape[0], levels))
    for j, r in enumerate(np.linspace(0, 1, levels)):
        idx = (rec >= r - 1e-12).argmax(1)
        reached = (rec >= r - 1e-12).any(1)
        out[:, j] = np.where(reached & (n_rel[:, 0] > 0), env[np.arange(rel.shape[0]), idx], 0.0)
    return out


# Gallery g0..g3 and queries q0..q2 in 2-D; classes A=0, B=1.
GALLERY = [(1.0, 0.0), (2.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]
G_LABELS = [0, 0, 1, 1]
QUERIES = [(1.4, 0.0), (0.2, 1.0), (-0.1, -1.0)]
Q_LABELS = [0, 1, 0]
Q_SEEN = [True, True, False]


def example() -> EmbeddingSet:
    n_q, n_g = len(QUERIES), len(GALLERY)
    return EmbeddingSet(
        ids=np.arange(n_q + n_g),
        vectors=torch.tensor(QUERIES + GALLERY),
        labels=np.array(Q_LABELS + G_LABELS),
        seen=np.array(Q_SEEN + [True] * n_g),
        is_query=np.array([True] * n_q + [False] * n_g),
        is_gallery=np.array([False] * n_q + [True] * n_g),
    )


def row(rows, ranking, split, k, delta=None):
    (r,) = [
        r
        for r in rows
        if r["ranking"] == ranking
        and r["split"] == split
        and r["k"] == k
        and (
            r["delta"] == delta
            or (delta is not None and r["delta"] is not None and abs(r["delta"] - delta) < 1e-9)
        )
    ]
    return r


def test_rankings_and_par_by_hand():
    rk = rank(example(), kmax=2)
    # gallery rows are 3..6 in the EmbeddingSet; q0 -> g0, g1; q1 -> g2, g0; q2 -> g3, g0
    assert rk.topk.tolist() == [[3, 4], [5, 3], [6, 3]]
    np.testing.assert_allclose(
        rk.topk_cosine[1], [1 / math.hypot(0.2, 1.0), 0.2 / math.hypot(0.2, 1.0)]
    )
    kept = par_rerank(torch.from_numpy(rk.topk), torch.from_numpy(rk.topk_cosine), 0.8)
    assert [k.tolist() for k in kept] == [[3, 4], [5], []]  # q2's PAR list is empty


def test_held_out_queries_are_their_own_split_beside_cross_set_seen(tmp_path):
    """With held-out clips (experiment=paper_real), ``seen`` is the cross-set seen queries only
    and ``seen_held_out`` the others; without any, the rows are those of before."""
    from dataclasses import replace

    plain = score_rows(example(), ks=[2], delta=0.8)
    assert {r["split"] for r in plain} == {"all", "seen", "unseen"}
    held = np.zeros(7, dtype=bool)
    held[0] = True  # q0 is a held-out clip of a trained class; q1 stays cross-set seen
    rows = score_rows(replace(example(), held_out=held), ks=[2], delta=0.8)
    assert row(rows, "euclidean", "seen_held_out", 2)["n_queries"] == 1
    assert row(rows, "euclidean", "seen_held_out", 2)["accuracy"] == pytest.approx(1.0)  # 2/2
    assert row(rows, "euclidean", "seen", 2)["n_queries"] == 1
    assert row(rows, "euclidean", "seen", 2)["accuracy"] == pytest.approx(0.5)  # q1: 1/2
    assert row(rows, "euclidean", "unseen", 2) == row(plain, "euclidean", "unseen", 2)
    assert row(rows, "euclidean", "all", 2) == row(plain, "euclidean", "all", 2)
    from media_retrieval.retrieval.embeddings_io import load_embeddings, save_embeddings

    path = save_embeddings(
        tmp_path / "e.npz", replace(example(), held_out=held), ["A", "B"], ["d"] * 7
    )
    assert load_embeddings(path)[0].held_out.tolist() == held.tolist()  # rescoring keeps them
    save_embeddings(tmp_path / "old.npz", example(), ["A", "B"], ["d"] * 7)
    assert load_embeddings(tmp_path / "old.npz")[0].held_out is None


def test_unseen_queries_split_by_kinetics_class_when_the_class_map_says():
    """The unseen queries of Kinetics-400 classes and the others are scored apart (I3D has seen
    the former in pretraining); the two halves are exactly the unseen rows of their queries,
    and without the flag there are no such rows."""
    from dataclasses import replace

    seen = np.zeros(7, dtype=bool)  # every query unseen: q0, q1 (class A, Kinetics), q2 (B)
    kinetics = np.array([True, True, False, False, False, False, False])
    rows = score_rows(replace(example(), seen=seen, kinetics=kinetics), ks=[2], delta=0.8)
    assert row(rows, "euclidean", "unseen_kinetics", 2)["n_queries"] == 2
    assert row(rows, "euclidean", "unseen_kinetics", 2)["accuracy"] == pytest.approx(0.75)
    assert row(rows, "euclidean", "unseen_not_kinetics", 2)["n_queries"] == 1
    assert row(rows, "euclidean", "unseen_not_kinetics", 2)["accuracy"] == pytest.approx(0.5)
    plain = score_rows(replace(example(), seen=seen), ks=[2], delta=0.8)
    assert not {r["split"] for r in plain} & {"unseen_kinetics", "unseen_not_kinetics"}


def test_euclidean_top2_by_hand():
    rows = score_rows(example(), ks=[1, 2], delta=0.8)
    r = row(rows, "euclidean", "all", 2)
    # hits per query: 2/2, 1/2, 1/2
    assert r["accuracy"] == pytest.approx(2 / 3)
    # pairs (true, pred): AA AA | BB BA | AB AA -> A: tp 3 / pred 4 / true 4; B: tp 1 / 2 / 2
    assert r["precision"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert r["recall"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert r["f1"] == pytest.approx((0.75 + 0.5) / 2)
    # full-ranking AP: q0 1.0; q1 relevant at ranks 1, 3 -> (1 + 2/3) / 2; q2 at 2, 4 -> 0.5
    assert r["map"] == pytest.approx((1.0 + (1 + 2 / 3) / 2 + 0.5) / 3)
    assert r["n_queries"] == 3 and r["empty_share"] == 0.0
    assert r["chance"] == pytest.approx(0.5)  # every query: 2 of 4 gallery items relevant
    r1 = row(rows, "euclidean", "all", 1)
    assert r1["accuracy"] == pytest.approx(2 / 3)  # q0 A, q1 B right; q2 gets g3 (B) wrong


def test_par_with_empty_list_by_hand():
    rows = score_rows(example(), ks=[2], delta=0.8)
    r = row(rows, "par", "all", 2, 0.8)
    # kept: q0 {g0, g1}, q1 {g2}, q2 {} -> accuracy over the two non-empty lists
    assert r["accuracy"] == pytest.approx(1.0)
    assert r["empty_share"] == pytest.approx(1 / 3)
    assert r["mean_kept"] == pytest.approx(1.0)
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((1.0, 1.0, 1.0))
    # seen/unseen: q2 is the only unseen query and its list is empty
    u = row(rows, "par", "unseen", 2, 0.8)
    assert u["n_queries"] == 1 and u["empty_share"] == 1.0 and math.isnan(u["accuracy"])
    assert (u["precision"], u["recall"], u["f1"]) == (0.0, 0.0, 0.0)
    s = row(rows, "euclidean", "seen", 2)
    assert s["accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert s["map"] == pytest.approx((1.0 + (1 + 2 / 3) / 2) / 2)


def test_query_itself_excluded_in_leave_one_out():
    emb = example()
    both = np.ones(len(emb.ids), dtype=bool)
    loo = EmbeddingSet(emb.ids, emb.vectors, emb.labels, emb.seen, both, both)
    rk = rank(loo, kmax=1)
    assert all(rk.query_rows[i] != rk.topk[i, 0] for i in range(len(rk.query_rows)))
    # q0 (1.4, 0) is nearest to g0 (1, 0), not to itself
    assert rk.topk[0, 0] == 3


def test_ties_broken_by_gallery_order():
    emb = EmbeddingSet(
        np.arange(3),
        torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]),
        np.array([0, 1, 0]),
        np.ones(3, bool),
        np.array([True, False, False]),
        np.array([False, True, True]),
    )
    assert rank(emb, kmax=2).topk.tolist() == [[1, 2]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_prf_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 7, 200)
    y_pred = np.where(rng.random(200) < 0.5, y_true, rng.integers(0, 9, 200))
    expected = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0, labels=np.union1d(y_true, y_pred)
    )[:3]
    assert macro_prf(y_true, y_pred) == pytest.approx(expected)


def test_average_precision_no_relevant_is_zero():
    ap = full_ranking_metrics(np.array([[False, False], [False, True]]))["ap"]
    assert ap.tolist() == [0.0, 0.5]


def test_ir_metrics_by_hand():
    rows = score_rows(example(), ks=[2], delta=0.8)
    r = row(rows, "euclidean", "all", 2)
    # R = 2 for every query. Hits in top-2: q0 2, q1 1 (rank 1), q2 1 (rank 2)
    assert r["p_at_k"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert r["r_at_k"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    d2 = 1 / math.log2(3)
    ideal = 1 + d2
    assert r["ndcg_at_k"] == pytest.approx((1 + 1 / ideal + d2 / ideal) / 3)
    # full ranking, first R = 2: q0 2/2, q1 1/2, q2 1/2
    assert r["r_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # mAP@R: q0 (1 + 1)/2; q1 (1/1)/2; q2 (1/2)/2
    assert r["map_at_r"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    p = row(rows, "par", "all", 2, 0.8)
    # PAR keeps q0 {g0, g1}, q1 {g2}, q2 {}: P@2 = (2/2 + 1/2 + 0) / 3
    assert p["p_at_k"] == pytest.approx(0.5)
    assert p["ndcg_at_k"] == pytest.approx((1 + 1 / ideal + 0) / 3)


def test_single_item_class_and_class_absent_from_gallery():
    """Leave-one-out: the lone 'c' item has no relevant neighbour (R = 0) and scores 0; a query
    whose class is absent from the gallery scores 0 as well."""
    vec = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.0, 0.2]])
    both = np.array([True, True, True, False])
    emb = EmbeddingSet(
        np.arange(4),
        vec,
        np.array([0, 0, 2, 1]),
        np.ones(4, bool),
        both,
        np.array([True, True, True, False]),
    )
    rows = score_rows(emb, ks=[1], delta=0.5)
    r = row(rows, "euclidean", "all", 1)
    # q0 -> item1 (a, hit); q1 -> item0 (hit); q2 ('c', alone) -> nearest is item1 (miss), AP 0
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["map"] == pytest.approx((1 + 1 + 0) / 3)
    assert r["r_at_k"] == pytest.approx((1 + 1 + 0) / 3)
    absent = EmbeddingSet(
        np.arange(3),
        vec[:3],
        np.array([1, 0, 0]),
        np.ones(3, bool),
        np.array([True, False, False]),
        np.array([False, True, True]),
    )
    a = row(score_rows(absent, ks=[2], delta=0.5), "euclidean", "all", 2)
    assert (a["accuracy"], a["map"], a["r_precision"], a["ndcg_at_k"], a["chance"]) == (
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    )


def test_exclude_other_chunks_of_the_same_video():
    vec = torch.tensor([[0.0], [0.1], [1.0], [1.1]])
    both = np.ones(4, bool)
    groups = np.array(["v1", "v1", "v2", "v3"])  # items 0, 1 are chunks of one video
    emb = EmbeddingSet(np.arange(4), vec, np.array([0, 0, 0, 0]), both, both, both, groups)
    assert rank(emb, kmax=1).topk[0, 0] == 1  # its own other chunk is the nearest
    assert rank(emb, kmax=1, exclude_same_group=True).topk[0, 0] == 2


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_full_ranking_metrics_match_dense_definitions(seed):
    rel = np.random.default_rng(seed).random((40, 300)) < 0.05
    rel[3] = False  # a query with nothing relevant
    fast = full_ranking_metrics(rel)
    rp, mr = r_precision_and_map_at_r(rel)
    np.testing.assert_allclose(fast["ap"], average_precision(rel))
    np.testing.assert_allclose(fast["r_precision"], rp)
    np.testing.assert_allclose(fast["map_at_r"], mr)
    np.testing.assert_allclose(fast["pr11"], interpolated_pr(rel))
    assert fast["n_relevant"].tolist() == rel.sum(1).tolist()


def test_chunked_topk_matches_full_ranking():
    from media_retrieval.retrieval.distances import topk_euclidean

    torch.manual_seed(0)
    q, g = torch.randn(37, 16), torch.randn(500, 16)
    d, i = topk_euclidean(q, g, k=7, max_chunk_bytes=500 * 4 * 5)  # 5 queries per chunk
    exact = torch.cdist(q.double(), g.double())
    ref = exact.topk(7, largest=False)
    assert torch.equal(i, ref.indices)
    torch.testing.assert_close(d.double(), ref.values, atol=1e-4, rtol=1e-5)


def test_cross_check_with_pytorch_metric_learning():
    """P@1, R-precision and mAP@R agree with pytorch-metric-learning's AccuracyCalculator
    (exact kNN with Euclidean distance, no faiss) on a leave-one-out set."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 120)
    vec = torch.from_numpy(
        (rng.normal(size=(5, 8))[labels] + rng.normal(scale=1.5, size=(120, 8))).astype(np.float32)
    )
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
    )
    pml = calc.get_accuracy(
        vec, torch.from_numpy(labels), vec, torch.from_numpy(labels), ref_includes_query=True
    )
    both = np.ones(120, dtype=bool)
    r = row(
        score_rows(EmbeddingSet(np.arange(120), vec, labels, both, both, both), ks=[1], delta=0.5),
        "euclidean",
        "all",
        1,
    )
    assert r["accuracy"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert r["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-6)
    assert r["map_at_r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)


def test_ir_metrics_agree_with_torchmetrics_retrieval():
    """Cross-check of the IR columns against torchmetrics' retrieval metrics (leave-one-out,
    random embeddings, no ties). Scores are exp(-distance): torchmetrics >= 1.8 ignores
    predictions <= 0."""
    from torchmetrics.retrieval import (
        RetrievalMAP,
        RetrievalNormalizedDCG,
        RetrievalPrecision,
        RetrievalRecall,
        RetrievalRPrecision,
    )

    rng = np.random.default_rng(3)
    n, k = 60, 5
    x = torch.tensor(rng.normal(size=(n, 8)), dtype=torch.float32)
    labels = rng.integers(0, 4, n)
    emb = EmbeddingSet(
        np.arange(n), x, labels, np.ones(n, bool), np.ones(n, bool), np.ones(n, bool)
    )
    row = next(
        r for r in score_rows(emb, [k], 0.8) if r["ranking"] == "euclidean" and r["split"] == "all"
    )
    d = torch.cdist(x, x)
    off = ~torch.eye(n, dtype=torch.bool)
    preds = torch.exp(-d)[off]
    target = torch.from_numpy(labels[:, None] == labels[None, :])[off]
    indexes = torch.arange(n)[:, None].expand(n, n)[off]
    expected = {
        "map": RetrievalMAP(),
        "p_at_k": RetrievalPrecision(top_k=k),
        "r_at_k": RetrievalRecall(top_k=k),
        "ndcg_at_k": RetrievalNormalizedDCG(top_k=k),
        "r_precision": RetrievalRPrecision(),
    }
    for key, metric in expected.items():
        assert row[key] == pytest.approx(float(metric(preds, target, indexes=indexes)), abs=1e-6), (
            key
        )


def _report_run(tmp: Path, seed: int, acc: float, side: str, **extra) -> Run:
    rows = [
        {"model": "cnn_lstm", "ranking": rk, "split": sp, "k": 5, "delta": None if rk == "euclidean"
         else 0.5, "dataset": ds, "accuracy": acc, "precision": 0.5, "recall": 0.5, "f1": 0.5,
         "map": acc / 2, "n_queries": 10}
        for rk in ("euclidean", "par") for sp in ("all", "seen") for ds in ("all", "setx")
    ]  # fmt: skip
    path = tmp / f"{side}-{seed}"
    path.mkdir(parents=True, exist_ok=True)
    overrides = {"seed": str(seed), "experiment": side}
    run = Run(path, rows, overrides, {"model": {"name": "cnn_lstm"}, **extra})
    run.delta = 0.5
    return run


def test_report_table_iv_is_the_mean_over_seeds_with_its_spread(tmp_path):
    """Runs of one variant that differ only in the seed make one Table IV row: the mean of
    their headline rows, ± the population standard deviation (by hand: 0.5, 0.7 -> 0.6 ± 0.1);
    the paper's value beside it; the test sets apart in their own table."""
    from media_retrieval.reporting.paper_tables import per_source_table, table_iv

    runs = [_report_run(tmp_path, 1, 0.5, "a"), _report_run(tmp_path, 2, 0.7, "a")]
    runs.append(_report_run(tmp_path, 1, 0.9, "b"))
    text = table_iv(runs, k=5)
    assert "Means over up to 2 seeds" in text
    lines = {ln.split(" | ")[0]: ln.split(" | ") for ln in text.splitlines() if ln.startswith("|")}
    a, b = lines["| cnn_lstm · experiment=a EU"], lines["| cnn_lstm · experiment=b EU"]
    assert a[1] == "2" and a[2] == "0.6000 ± 0.1000 (0.7644)"  # the paper's CNN + LSTM, seen
    assert b[1] == "1" and b[2] == "0.9000 (0.7644)"
    assert lines["| cnn_lstm · experiment=a PAR"][2] == "0.6000 ± 0.1000 (0.8575)"
    by_set = per_source_table(runs, k=5)
    (row_a,) = [ln for ln in by_set.splitlines() if ln.startswith("| cnn_lstm · experiment=a |")]
    # one split in the set: its "all" row would repeat it; mAP = accuracy / 2 by construction
    assert row_a.split(" | ")[1:] == ["setx", "seen", "10", "0.6000 ± 0.1000", "0.6000",
                                      "0.3000 ± 0.0500 |"]  # fmt: skip


def test_report_table_iii_comes_from_the_runs_and_budget_runs_say_if_they_plateaued(tmp_path):
    """Table III averages each variant's ``retrieval/cost.json`` (the run's own measurement);
    a budget-limited run is evidence only if its validation mAP had plateaued (by hand: the
    best epoch is not the last, or the last gained < 0.01)."""
    import json

    from media_retrieval.reporting.paper_tables import (
        budget_note,
        fig4_figures,
        table_iii_from_runs,
    )

    runs = [_report_run(tmp_path, s, 0.5, "a") for s in (1, 2)]
    for run, secs in zip(runs, (0.2, 0.4), strict=True):
        (run.path / "retrieval").mkdir()
        cost = {"params_m": 5.0, "weights_mb": 20.0, "embed_s": secs, "clip": "16x224",
                "train_s": 120.0, "epochs": 3, "train_clips": 100, "torch_threads": 2}  # fmt: skip
        (run.path / "retrieval" / "cost.json").write_text(json.dumps(cost))
    (row,) = [ln for ln in table_iii_from_runs(runs).splitlines() if ln.startswith("| cnn_lstm")]
    assert row.split(" | ")[1:4] == ["5 M (4.5 M)", "20 (22.5)", "0.3 s, 16x224 (0.8 s, 16 frames)"]
    assert "2.0 min, 3 epochs, 100 clips (2.7 h, GPU)" in row
    curve = "epoch,step,val/retrieval/euclidean/all/map\n0,1,{}\n1,2,{}\n2,3,{}\n"
    cases = {(0.20, 0.30, 0.29): "plateaued", (0.20, 0.300, 0.305): "plateaued",
             (0.20, 0.30, 0.40): "still rising"}  # fmt: skip
    for values, verdict in cases.items():
        run = _report_run(tmp_path / str(values), 1, 0.5, "a", budget_limited="8 frames")
        (run.path / "csv" / "version_0").mkdir(parents=True)
        (run.path / "csv" / "version_0" / "metrics.csv").write_text(curve.format(*values))
        assert verdict in budget_note([run]) and "8 frames" in budget_note([run])
    assert budget_note(runs) == ""  # a full-budget run needs no note
    pictures = fig4_figures([*runs, _report_run(tmp_path, 1, 0.9, "b")], 5, tmp_path)
    assert [p.name for _, p in pictures] == ["fig4_a.png", "fig4_b.png"]
    assert all(p.stat().st_size > 10_000 for _, p in pictures)
