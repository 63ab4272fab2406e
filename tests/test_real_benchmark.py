"""The real-footage benchmark's protocol on small generated features: every choice is made on
validation sources only, siblings are never ranked, every reported model has its row."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import real_benchmark as rb  # noqa: E402

from media_retrieval.data.discovery import MediaItem  # noqa: E402
from media_retrieval.data.folds import leave_one_source_out  # noqa: E402


def _data(seed: int = 0, noisy_test: str | None = None) -> rb.Data:
    """Eight sources of 3 classes x 4 clips; a class is a direction in both feature spaces, so
    the encoders find it; JHMDB clips come in sibling pairs. ``noisy_test``: that source's
    features replaced by noise (a choice that read them would change)."""
    rng = np.random.default_rng(seed)
    sources, feats, clip = {}, {}, {}
    for s in rb.SETS:
        classes = (
            ["fight", "no_fight"]
            if s in ("fight-cctv", "hockey_fights")
            else [f"{s}_c{i}" for i in range(3)]
        )
        items = []
        for c in classes:
            centre_f, centre_c = rng.normal(size=1280), rng.normal(size=1424)
            for i in range(4):
                name = f"{c}-video{i // 2}_{c}_{i}" if s == "jhmdb" else f"{c}_{i}"
                it = MediaItem(f"/{s}/{c}/{name}.mp4", s, c, f"{s}/{c}/{i}")
                items.append(it)
                feats[it.key] = (centre_f + rng.normal(size=(16, 1280)) * 2).astype(np.float32)
                clip[it.key] = (centre_c + rng.normal(size=1424) * 2).astype(np.float32)
                if s == noisy_test:
                    feats[it.key] = rng.normal(size=(16, 1280)).astype(np.float32)
                    clip[it.key] = rng.normal(size=1424).astype(np.float32)
        sources[s] = items
    all_items = [it for v in sources.values() for it in v]
    return rb.Data(
        sources,
        feats,
        clip,
        {it.key: rb.sibling_group(it) for it in all_items},
        {it.key: it.label.endswith("c0") for it in all_items},
    )


@pytest.fixture(autouse=True)
def _short_training(monkeypatch):
    monkeypatch.setattr(rb, "EPOCHS", (1, 2))
    monkeypatch.setattr(rb, "WHITEN", (None, 8))
    monkeypatch.setattr(
        rb,
        "FREE_GRID",
        [
            rb.BASELINE,
            rb.Embedding("mean_std", whiten=8),
            rb.Embedding("none", "both"),
            rb.Embedding("mean_std", "logits", 1.0, 8),
        ],
    )
    monkeypatch.setattr(rb, "I3D_GRID", [rb.Embedding("none", "both")])


def test_choices_never_read_the_test_source(monkeypatch):
    """Training and validation scoring never see a test clip; only the reported rows do."""
    data = _data()
    fold = next(
        f
        for f in leave_one_source_out(data.sources, allow_shared=True)
        if f.test == "ut_interaction"
    )
    trained_on, scored = [], []
    train, score = rb.train, rb.score
    monkeypatch.setattr(
        rb, "train", lambda items, *a, **k: trained_on.append(items) or train(items, *a, **k)
    )
    monkeypatch.setattr(
        rb,
        "score",
        lambda z, items, *a, **k: (
            scored.append((items, k.get("kinetics", False))) or score(z, items, *a, **k)
        ),
    )
    rows = rb.run_fold(fold, data, seeds=[0])
    assert [r["model"] for r in rows] == ["baseline", "i3d", "free", "default", "cnn_lstm_paper"]
    assert all(
        r["fold"] == "ut_interaction" and 0 <= r["p_at_5"] <= 1 and r["n_kinetics_unseen"] == 8
        for r in rows
    )
    assert not any(it.dataset == "ut_interaction" for items in trained_on for it in items)
    assert len(trained_on) == 2 * (rb.N_VALIDATION + 1)  # grids on one seed, then the final model
    test_calls = [
        final for items, final in scored if any(it.dataset == "ut_interaction" for it in items)
    ]
    assert test_calls and all(test_calls) and len(test_calls) == len(rows)
    held = {it.dataset for items, final in scored if not final for it in items}
    assert held == set(rb.SETS) - {"ut_interaction"}  # training-free choices: every source
    # the trained grids: the first three of VALIDATION_ORDER, each left out of one inner set
    inner = trained_on[: rb.N_VALIDATION] + trained_on[rb.N_VALIDATION + 1 : -1]
    left_out = [set(rb.SETS) - {"ut_interaction"} - {it.dataset for it in i} for i in inner]
    assert left_out == [{"jhmdb"}, {"egogestar_pointing"}, {"exercise-typing"}] * 2


def test_siblings_are_not_ranked_and_shared_classes_are_marked():
    data = _data()
    jhmdb = data.sources["jhmdb"]
    assert len({data.group[it.key] for it in jhmdb}) == len(jhmdb) // 2
    # identical vectors for siblings: with them ranked, P@1 would be perfect whatever the class
    vecs = rb.free_vectors(rb.BASELINE, jhmdb, data)
    folds = {f.test: f for f in leave_one_source_out(data.sources, allow_shared=True)}
    assert (
        folds["hockey_fights"].seen_elsewhere == {"fight", "no_fight"}
        and not folds["jhmdb"].seen_elsewhere
    )
    rows = rb.score(vecs, jhmdb, data)
    assert rb.pick(rows, "euclidean")["n_queries"] == len(jhmdb)
    from media_retrieval.retrieval.evaluate import EmbeddingSet, rank

    labels = np.array([it.label for it in jhmdb])
    emb = EmbeddingSet(
        np.arange(len(jhmdb)),
        vecs,
        np.unique(labels, return_inverse=True)[1],
        np.zeros(len(jhmdb), bool),
        np.ones(len(jhmdb), bool),
        np.ones(len(jhmdb), bool),
        np.array([data.group[it.key] for it in jhmdb]),
    )
    ranked = rank(emb, 5, exclude_same_group=True)
    for q, top in zip(ranked.query_rows, ranked.topk, strict=True):
        assert data.group[jhmdb[q].key] not in {data.group[jhmdb[g].key] for g in top if g >= 0}
