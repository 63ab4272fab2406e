"""Experiment configs, W&B sweep files, Hydra multiruns (ablation, Optuna) and the report."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REAL_CLIPS, ROOT, compose_cfg, tiny_overrides
from helpers.standins import make_cifar_batches, make_paper_datasets, make_real_clips_standin
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from media_retrieval.cli.train import train
from media_retrieval.data.image_sets import load_cifar_batch
from media_retrieval.reporting.report import find_runs, pca_study
from media_retrieval.utils.hparams import flat_hparams

EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
SMALL = ["data.num_workers=0", "trainer.accelerator=cpu", "logger=csv"]
# the online-only ImageNet weights of the paper configs, replaced for offline smoke passes
OFFLINE_WEIGHTS = ["model.backbone.weights=none"]


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("standins")
    real = REAL_CLIPS if REAL_CLIPS.is_dir() else make_real_clips_standin(base / "real-clips")
    return {
        "data": make_paper_datasets(base / "data"),
        "cifar": make_cifar_batches(base / "data" / "cifar10"),
        "real": real,
        "cache": base / "cache",
    }


def experiment_overrides(name: str, standins: dict[str, Path], tiny_dirs) -> list[str]:
    common = [
        f"paths.data_dir={standins['data']}",
        f"paths.cache_dir={standins['cache']}",
        *SMALL,
        "data.clip.image_size=64",
    ]
    if name.startswith("paper_real"):  # two small real sets (set after composing, as real_all)
        return common + [f"paths.real_clips_dir={standins['real']}", "data.clip.frames=4"]
    if name.startswith("paper_"):
        extra = ["data.min_clips=2", "data.batch_size=4", "data.clip.frames=4"]
        extra += ["model.width=0.125"] if name == "paper_c3d" else OFFLINE_WEIGHTS
        return common + extra
    if name == "color_vs_gray":
        return common + [
            *OFFLINE_WEIGHTS,
            "data.clip.image_size=32",
            "data.batch_size=8",
            "data.eval_batch_size=8",
        ]
    if name == "real_clips":
        return common + [f"paths.real_clips_dir={standins['real']}", "data.clip.frames=4"]
    if (
        name == "real_all"
    ):  # two of its eight sets (set after composing: an override merges): one batch per stage
        real = standins["real"]
        return common + [f"paths.real_clips_dir={real}", "data.clip.frames=4", "data.batch_size=4"]
    if name == "ssl":  # a folder of unlabelled video: one real set, its class folders ignored
        return common + [
            f"data.root={standins['real']}/gestures-mini",
            "data.clip.frames=4",
            "data.dense_frames=8",
            "data.batch_size=4",
            "data.val_fraction=0.3",
        ]
    return tiny_overrides(*tiny_dirs)  # demo, demo_baseline: the built-in corpus


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_runs_fast_dev_run(name, standins, tiny_dirs, tmp_path):
    cfg = compose_cfg(
        "train.yaml",
        [f"experiment={name}", "debug=fdr", *experiment_overrides(name, standins, tiny_dirs)],
        tmp_path,
    )
    GlobalHydra.instance().clear()
    expected = {
        "paper_cnn_lstm": ("CrossDataModule", "cnn_lstm"),
        "paper_c3d": ("CrossDataModule", "c3d"),
        "paper_e2e": ("CrossDataModule", "cnn_lstm_e2e"),
        "color_vs_gray": ("Cifar10DataModule", "cnn_lstm_e2e"),
        "real_clips": ("FolderDataModule", "cnn_lstm"),
        "real_all": ("FolderDataModule", "cnn_lstm_i3d"),
        "paper_real": ("CrossDataModule", "cnn_lstm"),
        "paper_real_mirror": ("CrossDataModule", "cnn_lstm"),
        "ssl": ("FolderDataModule", "cnn_lstm"),
    }
    if name in expected:
        assert (cfg.data._target_.rsplit(".", 1)[1], cfg.model.name) == expected[name]
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        if name == "real_all":
            cfg.data.roots = {
                s: f"{standins['real']}/{s}" for s in ("gestures-mini", "ucf101-mini")
            }
        if name.startswith("paper_real"):
            _one_small_set_per_side(cfg, name, standins)
    metrics = train(cfg)
    assert isinstance(metrics, dict)
    if name == "ssl":  # no labels: nothing to test; the label-free validation metric instead
        assert cfg.data.labels == "none" and cfg.model.loss.name == "infonce" and not cfg.test
        assert 0.0 <= metrics["val/view_acc"] <= 1.0
        return
    # fast_dev_run: one batch of each stage; retrieval on one test batch may have no query
    assert isinstance(json.loads((tmp_path / "retrieval" / "results.json").read_text()), list)
    if name.startswith("paper_real"):  # Table III from the run itself
        cost = json.loads((tmp_path / "retrieval" / "cost.json").read_text())
        assert cost["params_m"] > 1 and cost["embed_s"] > 0 and cost["clip"] == "4x64"


def _one_small_set_per_side(cfg, name: str, standins: dict[str, Path]) -> None:
    """experiment=paper_real(_mirror) on one small set per side, in the side's direction."""
    a, b = "gestures-mini", "ucf101-mini"
    a, b = (a, b) if name == "paper_real" else (b, a)
    cfg.data.sources = {a: f"{standins['real']}/{a}"}
    cfg.data.targets = {b: f"{standins['real']}/{b}"}


BUDGETS = {  # budget -> (model, frames, epochs, accelerator) as the file sets them (cpu_: sized
    # for 2 cores, on whatever the machine has)
    "cpu_c3d": ("c3d", 8, 3, "auto"),
    "cpu_e2e": ("cnn_lstm_e2e", 8, 3, "auto"),
    "gpu_c3d": ("c3d", 16, 75, "gpu"),
    "gpu_e2e": ("cnn_lstm_e2e", 16, 100, "gpu"),
}


def test_paper_real_budgets_set_what_they_say(tmp_path):
    """The pixel-trained models' budgets on experiment=paper_real: the CPU ones make
    make paper-real's budget-limited rows (and say so), the GPU ones are the paper's Table I."""
    assert sorted(p.stem for p in (ROOT / "configs" / "budget").glob("*.yaml")) == sorted(BUDGETS)
    for budget, (model, frames, epochs, accelerator) in BUDGETS.items():
        cfg = compose_cfg("train.yaml", ["experiment=paper_real", f"budget={budget}"], tmp_path)
        assert (cfg.model.name, cfg.data.clip.frames) == (model, frames)
        assert (cfg.trainer.max_epochs, cfg.trainer.accelerator) == (epochs, accelerator)
        assert bool(cfg.get("budget_limited")) == budget.startswith("cpu_")
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("budget", ["gpu_c3d", "gpu_e2e"])
def test_paper_real_gpu_budgets_run_one_batch_on_cpu(budget, standins, tmp_path):
    """The paper's budget (trainer=gpu) is config, smoke-tested here on CPU: one batch of each
    stage, small clips; the CPU budgets run the same models in make paper-real."""
    small = experiment_overrides("paper_real", standins, None)
    cfg = compose_cfg(
        "train.yaml",
        ["experiment=paper_real", f"budget={budget}", "debug=fdr", *small, "model.input_size=64"],
        tmp_path,
    )
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        _one_small_set_per_side(cfg, "paper_real", standins)
    assert isinstance(train(cfg), dict)
    assert json.loads((tmp_path / "retrieval" / "cost.json").read_text())["clip"] == "4x64"


def test_paper_experiment_offline_ends_with_one_line(standins, tmp_path):
    """Without the weights override, the paper's MobileNet V1 weights cannot download here:
    the run stops at start-up with one line saying what to fetch."""
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "experiment=paper_cnn_lstm",
            "debug=fdr",
            f"paths.data_dir={standins['data']}",
            f"paths.cache_dir={standins['cache']}",
            "data.min_clips=2",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: model.backbone.name=mobilenetv1_100: no ImageNet weights for it are cached here"
    )
    assert "model.backbone.weights=" in last


def test_cifar_batches_load_without_running_code(tmp_path):
    root = make_cifar_batches(tmp_path)
    b = load_cifar_batch(root / "cifar-10-batches-py" / "data_batch_1")
    assert np.asarray(b["data"]).shape == (30, 3072) and len(b["labels"]) == 30

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    import pickle

    evil = tmp_path / "evil_batch"
    evil.write_bytes(pickle.dumps({"data": Payload()}))
    from media_retrieval.errors import DataError

    with pytest.raises(DataError, match="refusing to load"):
        load_cifar_batch(evil)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------- W&B sweeps


def _grid(sweep: dict) -> list[dict]:
    params = sweep["parameters"]
    fixed = {k: v["value"] for k, v in params.items() if "value" in v}
    varying = {k: v["values"] for k, v in params.items() if "values" in v}
    return [
        {**fixed, **dict(zip(varying, combo, strict=True))}
        for combo in itertools.product(*varying.values())
    ]


def _agent_args(params: dict) -> list[str]:
    """What ${args_no_hyphens} expands to."""
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items()]


def _expected_failure(params: dict) -> str | None:
    if (
        params.get("model.temporal.readout") == "last_hc"
        and params.get("model.temporal.cell") != "lstm"
    ):
        return "needs cell=lstm"
    if (
        params.get("model.backbone.weights") == "imagenet"
        and params.get("model.backbone.name") != "efficientnet_lite0"
    ):
        return "no ImageNet weights for it are cached here"
    return None


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_file_is_well_formed(path):
    sweep = yaml.safe_load(path.read_text())
    assert (ROOT / sweep["program"]).is_file()
    assert sweep["command"][-1] in ("${args_no_hyphens}", "${args_override_hydra}")
    assert sweep["method"] in ("grid", "random", "bayes")
    # model selection on validation only: a val/ metric, or re-scoring of validation embeddings
    on_val = sweep["metric"]["name"].startswith("val/retrieval/") or (
        sweep["metric"]["name"].startswith("retrieval/")
        and sweep["parameters"]["embeddings"]["value"].endswith("val_embeddings.npz")
    )
    assert on_val and sweep["metric"]["goal"] == "maximize"
    assert len(_grid(sweep)) >= 2
    # the header states the run count (and the measured time per run): no surprise 486-run grid
    stated = re.search(
        r"^# (\d+) runs \(the grid\)\. .* measured on", path.read_text(), re.M | re.S
    )
    assert stated and int(stated[1]) == len(_grid(sweep)), path.name


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [p for p in SWEEPS if p.stem != "par_delta_k"],  # run in test_train.py
    ids=[p.stem for p in SWEEPS if p.stem != "par_delta_k"],
)
def test_sweep_commands_run_offline(path, tiny_dirs, tmp_path):
    """A sample of each training sweep's grid (its first point + one random point), run as the
    agent would with WANDB_MODE=disabled; impossible and online-only points end with one line."""
    sweep = yaml.safe_load(path.read_text())
    grid = _grid(sweep)
    sample = [grid[0], random.Random(0).choice(grid[1:])]
    failing = next((p for p in grid if _expected_failure(p)), None)  # e.g. online-only weights
    if failing is not None and failing not in sample:
        sample.append(failing)
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    tiny = [o for o in tiny_overrides(*tiny_dirs) if not o.startswith("logger=")] + [
        "trainer.max_epochs=1"
    ]
    seen_metric = False
    for i, params in enumerate(sample):
        params = {
            **params,
            "data.clip.frames": min(int(params.get("data.clip.frames", 4)), 8),
        }  # tiny clips are short
        out = tmp_path / f"run{i}"
        cmd = [
            sys.executable,
            str(ROOT / sweep["program"]),
            *tiny,
            *_agent_args(params),
            f"hydra.run.dir={out}",
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
        why = _expected_failure(params)
        if why:
            assert r.returncode == 2, r.stderr[-1500:]
            assert why in r.stderr.strip().splitlines()[-1]
            continue
        assert r.returncode == 0, (params, r.stderr[-3000:])
        rows = json.loads((out / "retrieval" / "results.json").read_text())
        assert rows
        # the sweep's metric is one the run logs
        logged = (out / "csv").rglob("metrics.csv")
        header = next(iter(logged)).read_text().splitlines()[0].split(",")
        seen_metric |= sweep["metric"]["name"] in header
    assert seen_metric or all(_expected_failure(p) for p in sample)


def test_sweep_locked_keys_are_not_relogged(cfg_train):
    flat = flat_hparams(cfg_train)
    assert flat["model.temporal.cell"] == "lstm" and "model" not in flat
    locked = {"model.temporal.cell", "experiment", "data"}
    out = flat_hparams(cfg_train, locked)
    assert "model.temporal.cell" not in out and not any(k.startswith("data.") for k in out)
    assert out["model.temporal.hidden"] == flat["model.temporal.hidden"]


# ------------------------------------------------------------------------- multiruns + report


@pytest.mark.slow
def test_temporal_ablation_multirun_and_report(tiny_dirs, tmp_path):
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "WANDB_MODE": "disabled"}
    sweep_dir = tmp_path / "multirun"
    tiny = [o for o in tiny_overrides(*tiny_dirs) if not o.startswith("data.clip.frames")]
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "-m",
        "ablation=temporal",
        *tiny,
        "model.temporal.num_layers=1",
        "model.temporal.bidirectional=false",
        "model.temporal.readout=last_hc",
        "data.clip.frames=4",
        "model.temporal.hidden=16",
        "trainer.max_epochs=2",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = find_runs([sweep_dir])
    assert [r.overrides["model.temporal.cell"] for r in runs] == ["lstm", "gru", "none"]
    # last_hc needs an LSTM: the gru and none jobs failed at start-up, recorded, sweep went on
    assert runs[0].error is None and runs[0].rows
    assert all("needs cell=lstm" in (r.error or "") for r in runs[1:])
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "report.py"),
            f"runs=[{sweep_dir}]",
            f"out={tmp_path / 'report.md'}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    text = (tmp_path / "report.md").read_text()
    assert text in r.stdout  # the command prints the report too
    table = text.split("## Runs (ablation table)")[1].split("##")[0]
    body = [ln for ln in table.strip().splitlines()[2:] if ln.startswith("|")]
    assert len(body) == 3 and "model.temporal.cell" in table
    assert "| lstm |" in body[0] and "failed" in body[1] and "failed" in body[2]
    assert (tmp_path / "report_figures" / "fig4.png").is_file()


@pytest.mark.slow
def test_optuna_search_runs_trials(tiny_dirs, tmp_path):
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "WANDB_MODE": "disabled"}
    sweep_dir = tmp_path / "optuna"
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "hparams_search=optuna",
        *tiny_overrides(*tiny_dirs),
        "trainer.max_epochs=2",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert 0.0 <= float(best["best_value"]) <= 1.0
    assert set(best["best_params"]) == {
        "model.lr",
        "model.dropout",
        "model.temporal.cell",
        "model.temporal.hidden",
        "model.temporal.num_layers",
    }
    assert len([d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()]) == 2


def test_pca_study_marks_the_90_percent_dimension(tmp_path):
    from media_retrieval.retrieval.embeddings_io import save_embeddings
    from media_retrieval.retrieval.evaluate import EmbeddingSet

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 10)
    centers = rng.normal(0, 1, (6, 3)) @ rng.normal(0, 1, (3, 32))  # rank-3 class structure
    x = centers[labels] + 0.05 * rng.normal(0, 1, (60, 32))
    import torch

    emb = EmbeddingSet(
        np.arange(60),
        torch.tensor(x, dtype=torch.float32),
        labels,
        np.ones(60, bool),
        np.arange(60) % 5 == 0,
        np.ones(60, bool),
    )
    save_embeddings(tmp_path / "e.npz", emb, [str(i) for i in range(6)], ["d"] * 60)
    rows = pca_study(tmp_path / "e.npz", k=5)
    marked = [r for r in rows if r["at_variance"]]
    assert len(marked) == 1 and marked[0]["dim"] <= 3 and marked[0]["variance"] >= 0.9
    full = rows[-1]
    assert full["dim"] == 32 and abs(full["variance"] - 1.0) < 1e-6
    assert marked[0]["precision@5"] >= full["precision@5"] - 0.02  # the paper's claim holds here


def test_the_real_clips_folder_is_one_setting_the_environment_can_move(tmp_path, monkeypatch):
    """``paths.real_clips_dir`` (configs), the benchmarks' ``--real-dir`` default and the tests'
    REAL_CLIPS all come from ``config.paths.real_clips_dir``: ``$MEDIA_RETRIEVAL_REAL_CLIPS`` moves
    them all."""
    from media_retrieval.config.paths import real_clips_dir

    assert Path(real_clips_dir(str(ROOT))) == REAL_CLIPS
    monkeypatch.delenv("MEDIA_RETRIEVAL_REAL_CLIPS", raising=False)
    cfg = compose_cfg("train.yaml", ["experiment=real_all"], tmp_path)
    assert (
        Path(cfg.paths.real_clips_dir) == (ROOT.parent / "shared" / "data" / "real-clips").resolve()
    )
    monkeypatch.setenv("MEDIA_RETRIEVAL_REAL_CLIPS", str(tmp_path / "clips"))
    cfg = compose_cfg("train.yaml", ["experiment=real_all"], tmp_path)
    assert cfg.paths.real_clips_dir == str(tmp_path / "clips")
    assert cfg.data.roots["jhmdb"] == str(tmp_path / "clips" / "jhmdb")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_benchmark

    assert real_benchmark.real_clips_dir(str(ROOT)) == str(tmp_path / "clips")
