"""docs/extending.md, executed as written: a new ranking method and a new metric, each one
piece of code, reach evaluation rows, logged names and search."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from media_retrieval.models import registry
from media_retrieval.retrieval import rankers, results
from media_retrieval.retrieval.evaluate import EmbeddingSet, score_rows

DOC = ROOT / "docs" / "extending.md"


@contextlib.contextmanager
def restored_registries():
    """The registries as they were on entry, whatever a test registered meanwhile."""
    saved = (dict(rankers.RANKERS), dict(results.METRICS), dict(registry.MODELS))
    try:
        yield
    finally:
        for live, old in zip(
            (rankers.RANKERS, results.METRICS, registry.MODELS), saved, strict=True
        ):
            live.clear()
            live.update(old)


@pytest.fixture
def extended():
    """The doc's code blocks run in a namespace; the registries are restored afterwards."""
    with restored_registries():
        ns: dict = {"__name__": "docs_extending"}
        for block in re.findall(r"```python[^\n]*\n(.*?)```", DOC.read_text(), re.S):
            exec(compile(block, "docs/extending.md", "exec"), ns)  # noqa: S102 - our own documentation
        yield ns


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """The doc's ``file=my_package/...`` blocks written as a package of the user's, outside src/,
    on sys.path (and PYTHONPATH, for the commands this test starts)."""
    root = tmp_path / "user"
    files = re.findall(r"```python file=(\S+)\n(.*?)```", DOC.read_text(), re.S)
    assert {f for f, _ in files} == {"my_package/rankers.py", "my_package/models.py"}
    for name, text in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "my_package" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", f"{root}:{ROOT / 'src'}")
    with restored_registries():
        yield root
    for mod in [m for m in sys.modules if m == "my_package" or m.startswith("my_package.")]:
        del sys.modules[mod]


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
    np.testing.assert_array_equal(
        rel.keep(cos, np.zeros_like(cos)), [[True, True, False], [True, True, False]]
    )
    rows = score_rows(_set(), [3], 0.8)
    mine = [r for r in rows if r["ranking"] == "relative_par" and r["split"] == "all"]
    assert len(mine) == 1 and mine[0]["delta"] is None
    # query 0 (angle 0): candidates at 0.1, 0.2 (A, cos ~0.995, 0.98) then 1.5 (A, cos 0.07): keeps
    # 2, both right
    # query 3 (angle 3.0): 3.1, 3.2 (B) then 1.5 (A, cos 0.07): keeps 2, both right
    assert mine[0]["mean_kept"] == 2.0 and mine[0]["accuracy"] == 1.0
    logged = logged_metrics(rows, 0.8)
    assert (
        "retrieval/relative_par/all/accuracy@3" in logged
        and "retrieval/relative_par/all/map" not in logged
    )

    from helpers.media_library import write_image

    from media_retrieval.clips import ClipSpec
    from media_retrieval.retrieval.indexer import IndexOptions
    from media_retrieval.retrieval.media_index import MediaIndex

    for i, c in enumerate(("red_disc", "red_disc", "blue_stripes")):
        write_image(tmp_path / "m" / f"{c}{i}.png", c, seed=i)
    index = MediaIndex.build(
        tmp_path / "m",
        tmp_path / "i",
        clip_spec=ClipSpec(frames=1, image_size=32),
        options=IndexOptions(num_workers=0, trainer={"accelerator": "cpu"}),
    )
    hits = index.search(tmp_path / "m" / "red_disc0.png", k=3, ranking="relative_par")
    cos = np.array([h.cosine for h in hits])
    assert [h.kept for h in hits] == list(cos >= cos.max() - 0.05)


def test_a_new_metric_is_in_every_row_and_logged(extended):
    from media_retrieval.retrieval.results import logged_metrics

    rows = score_rows(_set(), [1, 3], 0.8, [0.99])
    for r in rows:
        assert "success_at_k" in r
    # hand-worked: with δ = 0.99 query 0 keeps its nearest (cos 0.995, right) and query 3 too ->
    # 1.0;
    # Euclidean top-1 of both queries is right -> 1.0
    by = {(r["ranking"], r["split"], r["k"], r["delta"]): r for r in rows}
    assert by[("euclidean", "all", 1, None)]["success_at_k"] == 1.0
    assert by[("par", "all", 3, 0.99)]["success_at_k"] == 1.0
    logged = logged_metrics(rows, 0.8)
    assert (
        "retrieval/euclidean/all/success@3" in logged
        and "retrieval/par/all/success@3_d0.99" in logged
    )


@pytest.mark.slow
def test_plugins_from_the_users_own_package_reach_eval_index_search_and_the_service(
    user_package, cfg_eval, tmp_path
):
    """docs/extending.md's two files, as the user's own package: named in ``plugins``, the ranking
    is scored by eval and offered by /search once in serve.rankings; the model builds an index
    that opens where the plug-in is named (command line: ``--plugin``) and is refused where not."""
    from fastapi.testclient import TestClient
    from helpers.media_library import write_image
    from omegaconf import open_dict

    from media_retrieval.cli.common import run_cli
    from media_retrieval.cli.eval import evaluate
    from media_retrieval.clips import ClipSpec
    from media_retrieval.retrieval.indexer import IndexOptions
    from media_retrieval.retrieval.media_index import MediaIndex
    from media_retrieval.serve.app import ServiceSettings, create_app

    assert "relative_par" not in rankers.RANKERS  # nothing registered until the plug-in is named
    with open_dict(cfg_eval):
        cfg_eval.plugins = ["my_package.rankers"]
        cfg_eval.model.temporal.cell = "none"  # a no-training model: eval needs no checkpoint
        cfg_eval.model.temporal.stats = ["mean"]
    run_cli(evaluate, cfg_eval)
    rows = json.loads((Path(cfg_eval.paths.output_dir) / "retrieval" / "results.json").read_text())
    assert any(r["ranking"] == "relative_par" for r in rows)

    for i, c in enumerate(("red_disc", "red_disc", "blue_stripes")):
        write_image(tmp_path / "m" / f"{c}{i}.png", c, seed=i)
    from my_package.models import ColourGrid

    index = MediaIndex.build(
        tmp_path / "m",
        tmp_path / "i",
        model=ColourGrid(),
        clip_spec=ClipSpec(frames=1, image_size=32),
        options=IndexOptions(num_workers=0, trainer={"accelerator": "cpu"}),
    )
    assert index.manifest["model_name"] == "colour_grid"
    assert MediaIndex.open(tmp_path / "i").model.__class__ is ColourGrid

    query = str(tmp_path / "m" / "red_disc0.png")
    with TestClient(
        create_app(ServiceSettings(index_dir=str(tmp_path / "i"))), base_url="http://127.0.0.1"
    ) as c:
        assert (
            c.post(
                "/search", params={"path": "red_disc0.png", "ranking": "relative_par"}
            ).status_code
            == 422
        )
    listed = ServiceSettings(index_dir=str(tmp_path / "i"), rankings=("par", "relative_par"))
    with TestClient(create_app(listed), base_url="http://127.0.0.1") as c:
        reply = c.post(
            "/search", params={"path": "red_disc0.png", "k": 3, "ranking": "relative_par"}
        )
        assert reply.status_code == 200 and reply.json()["ranking"] == "relative_par"
        cos = np.array([h["cosine"] for h in reply.json()["hits"]])
        assert [h["kept"] for h in reply.json()["hits"]] == list(cos >= cos.max() - 0.05)

    def search(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "media_retrieval",
                "search",
                *args,
                f"index_dir={tmp_path / 'i'}",
                f"query={query}",
                "k=2",
                f"hydra.run.dir={tmp_path / 'run'}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    without = search()
    assert without.returncode == 2 and "is not a registered model" in without.stderr
    assert "plugins=[<that module>]" in without.stderr and "Traceback" not in without.stderr
    named = search(
        "--plugin", "my_package.models", "--plugin=my_package.rankers", "ranking=relative_par"
    )
    assert named.returncode == 0, named.stderr
    assert "red_disc0.png" in named.stdout
    missing = search("--plugin", "my_package.rankerz")
    assert missing.returncode == 2 and "plugins: no module 'my_package.rankerz'" in missing.stderr
