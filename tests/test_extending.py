"""docs/extending.md, executed as written: a new ranking method and a new metric, each one
piece of code, reach evaluation rows, logged names and search."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import ROOT

from media_retrieval.retrieval import rankers, results
from media_retrieval.retrieval.evaluate import EmbeddingSet, score_rows


@pytest.fixture
def extended():
    """The doc's code blocks run in a namespace; the registries are restored afterwards."""
    saved = (dict(rankers.RANKERS), dict(results.METRICS))
    ns: dict = {}
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "extending.md").read_text(), re.S):
        exec(compile(block, "docs/extending.md", "exec"), ns)  # noqa: S102 - our own documentation
    yield ns
    rankers.RANKERS.clear()
    rankers.RANKERS.update(saved[0])
    results.METRICS.clear()
    results.METRICS.update(saved[1])


def _set() -> EmbeddingSet:
    """Two tight classes on a circle: queries 0 (class A) and 3 (class B)."""
    ang = np.array([0.0, 0.1, 0.2, 3.0, 3.1, 3.2, 1.5])
    v = torch.tensor(np.stack([np.cos(ang), np.sin(ang)], 1), dtype=torch.float32)
    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    q = np.zeros(7, bool)
    q[[0, 3]] = True
    return EmbeddingSet(np.arange(7), v, labels, np.ones(7, bool), q, ~q)


def test_a_new_ranking_method_is_scored_logged_and_searchable(extended, tmp_path):
    from media_retrieval.retrieval.results import logged_metrics

    rel = extended["RelativePAR"](margin=0.05)
    cos = np.array([[0.99, 0.97, 0.5], [0.4, 0.38, 0.1]])
    np.testing.assert_array_equal(rel.keep(cos, np.zeros_like(cos)), [[True, True, False], [True, True, False]])
    rows = score_rows(_set(), [3], 0.8)
    mine = [r for r in rows if r["ranking"] == "relative_par" and r["split"] == "all"]
    assert len(mine) == 1 and mine[0]["delta"] is None
    # query 0 (angle 0): candidates at 0.1, 0.2 (A, cos ~0.995, 0.98) then 1.5 (A, cos 0.07): keeps 2, both right
    # query 3 (angle 3.0): 3.1, 3.2 (B) then 1.5 (A, cos 0.07): keeps 2, both right
    assert mine[0]["mean_kept"] == 2.0 and mine[0]["accuracy"] == 1.0
    logged = logged_metrics(rows, 0.8)
    assert "retrieval/relative_par/all/accuracy@3" in logged and "retrieval/relative_par/all/map" not in logged

    from helpers.media_library import write_image

    from media_retrieval.clips import ClipSpec
    from media_retrieval.retrieval.indexer import IndexOptions
    from media_retrieval.retrieval.media_index import MediaIndex

    for i, c in enumerate(("red_disc", "red_disc", "blue_stripes")):
        write_image(tmp_path / "m" / f"{c}{i}.png", c, seed=i)
    index = MediaIndex.build(tmp_path / "m", tmp_path / "i", clip_spec=ClipSpec(frames=1, image_size=32),
                             options=IndexOptions(num_workers=0, trainer={"accelerator": "cpu"}))
    hits = index.search(tmp_path / "m" / "red_disc0.png", k=3, ranking="relative_par")
    cos = np.array([h.cosine for h in hits])
    assert [h.kept for h in hits] == list(cos >= cos.max() - 0.05)


def test_a_new_metric_is_in_every_row_and_logged(extended):
    from media_retrieval.retrieval.results import logged_metrics

    rows = score_rows(_set(), [1, 3], 0.8, [0.99])
    for r in rows:
        assert "success_at_k" in r
    # hand-worked: with δ = 0.99 query 0 keeps its nearest (cos 0.995, right) and query 3 too -> 1.0;
    # Euclidean top-1 of both queries is right -> 1.0
    by = {(r["ranking"], r["split"], r["k"], r["delta"]): r for r in rows}
    assert by[("euclidean", "all", 1, None)]["success_at_k"] == 1.0
    assert by[("par", "all", 3, 0.99)]["success_at_k"] == 1.0
    logged = logged_metrics(rows, 0.8)
    assert "retrieval/euclidean/all/success@3" in logged and "retrieval/par/all/success@3_d0.99" in logged
