"""Leave-one-source-out folds and δ selection: the pieces of the real-footage benchmark."""

from __future__ import annotations

import pytest

from media_retrieval.data.discovery import MediaItem
from media_retrieval.data.folds import leave_one_source_out
from media_retrieval.errors import DataError
from media_retrieval.retrieval.par import select_delta


def _items(source: str, classes: list[str], n: int = 2) -> list[MediaItem]:
    return [
        MediaItem(f"/{source}/{c}/{i}.mp4", source, c, f"{c}{i}") for c in classes for i in range(n)
    ]


def test_every_source_is_tested_once_and_its_classes_never_train():
    sources = {
        "a": _items("a", ["run", "jump"]),
        "b": _items("b", ["fight", "calm"]),
        "c": _items("c", ["type"]),
    }
    folds = leave_one_source_out(sources)
    assert [f.test for f in folds] == ["a", "b", "c"]
    for f in folds:
        train, test = f.items(sources, "train"), f.items(sources, "test")
        assert {it.dataset for it in test} == {f.test} and f.test not in {
            it.dataset for it in train
        }
        assert not {it.label for it in train} & {it.label for it in test}
        assert len(train) + len(test) == sum(len(v) for v in sources.values())


def test_a_class_in_two_sources_is_refused():
    with pytest.raises(DataError, match="share classes"):
        leave_one_source_out({"a": _items("a", ["run"]), "b": _items("b", ["run", "walk"])})
    with pytest.raises(DataError, match="at least 2"):
        leave_one_source_out({"a": _items("a", ["run"])})


def _par(delta, acc, empty, kept, k=5):
    return {
        "ranking": "par",
        "split": "all",
        "dataset": "all",
        "k": k,
        "delta": delta,
        "accuracy": acc,
        "empty_share": empty,
        "mean_kept": kept,
    }


def test_delta_auto_picks_the_best_accuracy_that_keeps_lists_filled():
    rows = [
        _par(0.5, 0.60, 0.00, 5.0),  # keeps all 5: re-ranks nothing -> not eligible
        _par(0.6, 0.66, 0.00, 4.2),
        _par(0.65, 0.68, 0.02, 3.6),  # best eligible: empties at most half the 5 % budget
        _par(0.7, 0.71, 0.04, 3.1),  # within 5 %, but not with the headroom unseen footage needs
        _par(0.8, 0.90, 0.30, 1.2),  # more accurate, but 30 % of the lists are empty
        _par(0.7, 0.99, 0.00, 2.0, k=10),  # another k: ignored
        {
            "ranking": "euclidean",
            "split": "all",
            "dataset": "all",
            "k": 5,
            "delta": None,
            "accuracy": 0.95,
            "empty_share": 0.0,
            "mean_kept": 5.0,
        },
    ]
    assert select_delta(rows, 5) == 0.65
    assert select_delta(rows, 5, headroom=1.0) == 0.7
    assert select_delta(rows, 5, max_empty_share=0.5, headroom=1.0) == 0.8
    assert (
        select_delta([_par(0.6, 0.7, 0.0, 4.0), _par(0.65, 0.7, 0.0, 3.5)], 5) == 0.6
    )  # tie: the smaller δ
    assert select_delta([_par(0.9, 0.9, 0.5, 1.0)], 5) is None
    # a gallery of 3: the Euclidean lists hold 3, so a δ keeping all 3 re-ranks nothing
    small = [
        _par(-1.0, 0.5, 0.0, 3.0),
        _par(0.5, 0.6, 0.0, 2.5),
        {
            "ranking": "euclidean",
            "split": "all",
            "dataset": "all",
            "k": 5,
            "delta": None,
            "accuracy": 0.5,
            "empty_share": 0.0,
            "mean_kept": 3.0,
        },
    ]
    assert select_delta(small, 5) == 0.5


def test_shared_classes_can_be_allowed_and_are_named_per_fold():
    sources = {
        "cctv": _items("cctv", ["fight", "calm"]),
        "hockey": _items("hockey", ["fight", "calm"]),
        "gym": _items("gym", ["lift"]),
    }
    folds = {f.test: f for f in leave_one_source_out(sources, allow_shared=True)}
    assert folds["cctv"].seen_elsewhere == {"fight", "calm"} == folds["hockey"].seen_elsewhere
    assert folds["gym"].seen_elsewhere == frozenset()
