"""End to end: train on the tiny built-in corpus, evaluate the checkpoint on 1 and 2 processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script, tiny_overrides
from omegaconf import open_dict

from media_retrieval.cli.eval import evaluate
from media_retrieval.cli.train import train


def _rows(path: Path) -> dict[tuple, dict]:
    rows = json.loads(path.read_text())
    return {(r["dataset"], r["ranking"], r["split"], r["k"], r["delta"]): r for r in rows}


REQUIRED_KEYS = {
    "model",
    "ranking",
    "split",
    "k",
    "delta",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "map",
    "n_queries",
}


def test_train_then_test_writes_results(cfg_train):
    metrics = train(cfg_train)
    out = Path(cfg_train.paths.output_dir)
    rows = _rows(out / "retrieval" / "results.json")
    assert all(set(r) >= REQUIRED_KEYS for r in rows.values())
    splits = {k[2] for k in rows}
    assert splits == {"all", "seen", "unseen"}
    # per-dataset breakdown: queries come from style_a (held-out classes) and style_b
    assert {k[0] for k in rows} == {"all", "style_a", "style_b"}
    deltas = {k[4] for k in rows if k[1] == "par"}
    assert deltas == {round(d, 6) for d in cfg_train.retrieval.par.deltas}
    assert "retrieval/par/unseen/precision@5" in metrics
    assert "retrieval/euclidean/seen/accuracy@5" in metrics
    assert "retrieval/par/all/precision@5_d0.80" in metrics
    assert (out / "split.csv").is_file() and (out / "retrieval" / "results.md").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    # 10 % of each test-pool class, at least one: 6 classes of 5 or 10 clips -> 6 queries
    assert rows[("all", "euclidean", "all", 5, None)]["n_queries"] == 6
    assert (
        sum(rows[(d, "euclidean", "all", 5, None)]["n_queries"] for d in ("style_a", "style_b"))
        == 6
    )
    for picture in ("fig4.png", "delta.png", "pr_curve.png", "gallery.png", "table_iv.md"):
        assert (out / "retrieval" / picture).stat().st_size > 0, picture


@pytest.mark.slow
def test_eval_same_on_one_and_two_processes(cfg_train, cfg_eval, tiny_dirs, tmp_path):
    """Odd test pool (45 clips), uneven batches of 4: DDP pads and repeats samples; gathering
    by id must score exactly the same samples with the same numbers."""
    train(cfg_train)
    ckpt = Path(cfg_train.paths.output_dir) / "checkpoints" / "last.ckpt"
    single = tmp_path / "single"
    with open_dict(cfg_eval):
        cfg_eval.ckpt_path = str(ckpt)
        cfg_eval.paths.output_dir = str(single)
        cfg_eval.callbacks.retrieval.output_dir = str(single / "retrieval")
        cfg_eval.data.output_dir = str(single)
    evaluate(cfg_eval)  # one process, in-process
    ddp = tmp_path / "ddp"
    proc = run_script(
        "eval.py",
        [
            *tiny_overrides(*tiny_dirs),
            "trainer=ddp_sim",
            f"ckpt_path={ckpt}",
            f"hydra.run.dir={ddp}",
            "data.eval_batch_size=4",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids1, rows1 = (
        np.load(single / "retrieval" / "scored_ids.npy"),
        _rows(single / "retrieval" / "results.json"),
    )
    ids2, rows2 = (
        np.load(ddp / "retrieval" / "scored_ids.npy"),
        _rows(ddp / "retrieval" / "results.json"),
    )
    assert len(ids1) == 45 and np.array_equal(ids1, ids2)
    assert rows1.keys() == rows2.keys()
    for key, r1 in rows1.items():
        for m in (
            "accuracy",
            "precision",
            "recall",
            "f1",
            "map",
            "empty_share",
            "mean_kept",
            "p_at_k",
            "ndcg_at_k",
        ):
            a, b = r1[m], rows2[key][m]
            assert (a is None and b is None) or math.isclose(a, b, abs_tol=1e-6), (key, m, a, b)


def test_no_training_baseline_evaluates_directly(cfg_train):
    cfg_train.model.temporal.cell = "none"
    cfg_train.model.name = "lite0_mean"
    train(cfg_train)
    out = Path(cfg_train.paths.output_dir)
    assert not (out / "checkpoints").exists()  # nothing was trained
    rows = _rows(out / "retrieval" / "results.json")
    assert rows[("all", "euclidean", "all", 5, None)]["model"] == "lite0_mean"


def test_fast_dev_run(cfg_train):
    with open_dict(cfg_train):
        cfg_train.trainer.fast_dev_run = True
    train(cfg_train)
    assert (Path(cfg_train.paths.output_dir) / "retrieval" / "results.json").is_file()


def test_eval_without_checkpoint_refuses_trainable_model(cfg_eval):
    from media_retrieval.errors import ConfigError

    with pytest.raises(ConfigError, match="ckpt_path is required"):
        evaluate(cfg_eval)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=nope", "Could not find 'model/nope'"),
        ("retrieval.k=[0,5]", "error: retrieval.k must be a list of integers >= 1"),
        ("retrieval.par.delta=1.5", "error: retrieval.par.delta=1.5: a number in [-1, 1]"),
        (
            ("model.backbone.name=not_a_model", "model.backbone.weights=none"),
            "error: model.backbone.name='not_a_model' is neither",
        ),
        # offline, with ImageNet weights asked for: said before torch loads, the typo included
        (
            ("model.backbone.name=not_a_model", "model.backbone.weights=imagenet"),
            "error: model.backbone.name=not_a_model: no ImageNet weights for it are cached here",
        ),
    ],
)
def test_cli_errors_are_one_clear_line(override, message, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline whatever the machine
    overrides = list(override) if isinstance(override, tuple) else [override]
    proc = run_script(
        "train.py", [*overrides, f"hydra.run.dir={tmp_path}", f"paths.data_dir={tmp_path}/data"]
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_saved_embeddings_rescore_without_model(cfg_train, cfg_eval, tmp_path):
    """eval save_embeddings=true, then eval embeddings=<file>: same rows, no model, new k."""
    train(cfg_train)
    ckpt = Path(cfg_train.paths.output_dir) / "checkpoints" / "last.ckpt"
    with open_dict(cfg_eval):
        cfg_eval.ckpt_path = str(ckpt)
        cfg_eval.save_embeddings = True
        cfg_eval.callbacks.retrieval.save_embeddings = True
        cfg_eval.paths.output_dir = str(tmp_path / "eval")
    evaluate(cfg_eval)
    saved = tmp_path / "eval" / "retrieval" / "embeddings.npz"
    assert saved.is_file()
    with open_dict(cfg_eval):
        cfg_eval.embeddings = str(saved)
        cfg_eval.ckpt_path = None
        cfg_eval.paths.output_dir = str(tmp_path / "rescore")
    metrics = evaluate(cfg_eval)
    a = _rows(tmp_path / "eval" / "retrieval" / "results.json")
    b = _rows(tmp_path / "rescore" / "retrieval" / "results.json")
    assert a.keys() == b.keys()
    for key in a:
        for m in ("accuracy", "precision", "f1", "map", "p_at_k", "ndcg_at_k"):
            assert a[key][m] == b[key][m] or (a[key][m] is None and b[key][m] is None), (key, m)
    assert "retrieval/par/all/precision@5_d0.90" in metrics
    assert "Best PAR δ per k" in (tmp_path / "rescore" / "retrieval" / "best_delta.md").read_text()


def test_wandb_logger_offline_needs_no_account(tiny_dirs, tmp_path):
    import os

    os.environ["WANDB_MODE"] = "offline"
    try:
        proc = run_script(
            "train.py",
            [
                *tiny_overrides(*tiny_dirs),
                "logger=wandb",
                "trainer.max_epochs=1",
                f"hydra.run.dir={tmp_path}",
            ],
        )
    finally:
        os.environ["WANDB_MODE"] = "disabled"
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    assert (tmp_path / "csv").is_dir()  # CSV is always on


@pytest.mark.slow
def test_retrieval_callback_bit_identical_on_one_and_two_processes(tmp_path):
    import os
    import subprocess
    import sys

    script = Path(__file__).parent / "helpers" / "id_embedding_eval.py"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    for devices in (1, 2):
        proc = subprocess.run(
            [sys.executable, str(script), str(tmp_path / str(devices)), str(devices)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = (
        (tmp_path / "1" / "results.json").read_bytes(),
        (tmp_path / "2" / "results.json").read_bytes(),
    )
    assert one == two
    assert np.array_equal(np.load(tmp_path / "1" / "scored_ids.npy"), np.arange(37))
    assert np.array_equal(np.load(tmp_path / "2" / "scored_ids.npy"), np.arange(37))
    rows = json.loads(one)
    assert {r["dataset"] for r in rows} == {"all", "ds_a", "ds_b"}


@pytest.mark.slow
def test_par_sweep_commands_run_offline(cfg_train, cfg_eval, tmp_path):
    """Expand sweeps/par_delta_k.yaml into the command lines a W&B agent would run (a sample of
    the grid) and run them on saved embeddings with WANDB_MODE=disabled."""
    import itertools

    import yaml

    sweep = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "par_delta_k.yaml").read_text())
    assert sweep["command"][-1] == "${args_no_hyphens}" and sweep["program"] == "src/eval.py"
    train(cfg_train)
    with open_dict(cfg_eval):
        cfg_eval.ckpt_path = str(Path(cfg_train.paths.output_dir) / "checkpoints" / "last.ckpt")
        cfg_eval.save_embeddings = True
        cfg_eval.callbacks.retrieval.save_embeddings = True
        cfg_eval.paths.output_dir = str(tmp_path / "emb")
    evaluate(cfg_eval)
    params = sweep["parameters"]
    fixed = {k: v["value"] for k, v in params.items() if "value" in v}
    # δ and k are chosen on validation clips, of the last run that saved embeddings: no path to edit
    assert fixed["embeddings"] == "logs/eval/latest/retrieval/val_embeddings.npz"
    latest = Path(cfg_eval.paths.log_dir) / "eval" / "latest"
    assert latest.is_symlink() and latest.resolve() == (tmp_path / "emb").resolve()
    fixed["embeddings"] = str(
        latest / "retrieval" / "val_embeddings.npz"
    )  # logs/ of this test's own
    grid = [
        dict(zip(["retrieval.table_k", "retrieval.par.delta"], combo, strict=True))
        for combo in itertools.product(
            params["retrieval.table_k"]["values"], params["retrieval.par.delta"]["values"]
        )
    ]
    for i, combo in enumerate([grid[0], grid[-1]]):  # a sample of the grid: both ends of k and δ
        args = [f"{k}={v}" for k, v in {**fixed, **combo}.items()] + [
            f"hydra.run.dir={tmp_path}/run{i}"
        ]
        proc = run_script("eval.py", args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = json.loads((tmp_path / f"run{i}" / "retrieval" / "results.json").read_text())
        assert any(
            r["ranking"] == "par" and abs(r["delta"] - combo["retrieval.par.delta"]) < 1e-9
            for r in rows
        )


@pytest.mark.slow
def test_two_node_training(cfg_train, tiny_dirs, tmp_path):
    """trainer.num_nodes=2: the same command on two "nodes" (two processes, 1 CPU device each,
    gloo), started as a scheduler would, with NODE_RANK 0 and 1: both finish, rank 0 writes
    the checkpoint and the retrieval results of the whole test pool."""
    import sys

    from conftest import ROOT, start_nodes

    train(
        cfg_train
    )  # the corpus and the feature cache exist before the nodes start (shared storage)
    run_dir = tmp_path / "two-nodes"
    procs = start_nodes(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            *tiny_overrides(*tiny_dirs),
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.num_nodes=2",
            "trainer.max_epochs=2",
            "trainer.sync_batchnorm=false",
            f"hydra.run.dir={run_dir}",
        ]
    )
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outs[1]
    rows = _rows(run_dir / "retrieval" / "results.json")
    assert (
        rows[("all", "euclidean", "all", 5, None)]["n_queries"] == 6
    )  # every query, once, across both ranks
    assert list((run_dir / "checkpoints").glob("epoch_*.ckpt"))
