"""The fault matrix (docs/reliability.md): resume, safe loading, NaN, OOM, SIGTERM, Ctrl-C,
full disk and config validation. Each test asserts the outcome and that earlier results survive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_cfg, run_script, tiny_overrides
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from media_retrieval.cli.common import run_cli
from media_retrieval.cli.train import train
from media_retrieval.errors import ConfigError, MediaRetrievalError, TrainingDiverged


def _cfg(tiny_dirs, out: Path, extra: list[str] = ()):
    cfg = compose_cfg("train.yaml", [*tiny_overrides(*tiny_dirs), *extra], out)
    GlobalHydra.instance().clear()
    return cfg


def _headline(out: Path) -> dict:
    rows = json.loads((out / "retrieval" / "results.json").read_text())
    return {
        (r["ranking"], r["split"], r["k"], r["delta"]): (r["precision"], r["map"])
        for r in rows
        if r.get("dataset", "all") == "all"
    }


class Evil:
    """Unpickling this runs a shell command: a checkpoint that must never be executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "payload": Evil(marker)}, path)  # torch.save pickles the object
    return path


# ---------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_resume_from_epoch_checkpoint_equals_uninterrupted_run(tiny_dirs, tmp_path):
    det = ["trainer.deterministic=true", "seed=7"]
    full = tmp_path / "full"
    train(_cfg(tiny_dirs, full, [*det, "trainer.max_epochs=4"]))
    part = tmp_path / "part"
    train(_cfg(tiny_dirs, part, [*det, "trainer.max_epochs=2"]))
    assert (part / "checkpoints" / "last.ckpt").is_file()
    train(_cfg(tiny_dirs, part, [*det, "trainer.max_epochs=4", "ckpt_path=last"]))
    a, b = _headline(full), _headline(part)
    assert a.keys() == b.keys() and a
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-9, err_msg=str(key))
    # the resumed invocation trained epochs 3-4 only (it continued, it did not start over)
    import csv

    newest = max((part / "csv").rglob("metrics.csv"), key=lambda p: p.stat().st_mtime_ns)
    epochs = {int(float(r["epoch"])) for r in csv.DictReader(newest.open()) if r.get("train/loss")}
    assert epochs == {2, 3}


def test_ckpt_path_last_without_a_checkpoint_is_one_clear_error(tiny_dirs, tmp_path):
    cfg = _cfg(tiny_dirs, tmp_path, ["ckpt_path=last"])
    with pytest.raises(ConfigError, match="ckpt_path=last: no .*last.ckpt.*hydra.run.dir"):
        train(cfg)


# ---------------------------------------------------------------------------- safe loading


@pytest.mark.parametrize("entry", ["train", "eval", "index"])
def test_malicious_pickle_checkpoint_is_refused_and_never_runs(entry, tiny_dirs, tmp_path):
    marker = tmp_path / "payload_ran"
    evil = _malicious(tmp_path / "evil.ckpt", marker)
    if entry == "train":
        cfg = _cfg(tiny_dirs, tmp_path / "out", [f"ckpt_path={evil}", "trainer.max_epochs=1"])
        with pytest.raises(ConfigError, match="cannot be loaded safely"):
            train(cfg)
    elif entry == "eval":
        from media_retrieval.cli.eval import evaluate

        cfg = compose_cfg(
            "eval.yaml", [*tiny_overrides(*tiny_dirs), f"ckpt_path={evil}"], tmp_path / "out"
        )
        GlobalHydra.instance().clear()
        with pytest.raises(ConfigError, match="cannot be loaded safely"):
            evaluate(cfg)
    else:
        from media_retrieval.cli.index import run_index

        (tmp_path / "media").mkdir()
        cfg = compose_cfg(
            "index.yaml",
            [
                f"ckpt_path={evil}",
                f"media_dir={tmp_path / 'media'}",
                f"index_dir={tmp_path / 'index'}",
            ],
            tmp_path / "out",
        )
        GlobalHydra.instance().clear()
        with pytest.raises(ConfigError, match="cannot be loaded safely"):
            run_index(cfg)
    assert not marker.exists()


def test_embeddings_and_index_files_load_without_pickle(tmp_path):
    from media_retrieval.retrieval.embeddings_io import load_embeddings

    marker = tmp_path / "ran"
    bad = tmp_path / "emb.npz"
    np.savez(bad, vectors=np.array([Evil(marker)], dtype=object), ids=np.arange(1))
    with pytest.raises((ConfigError, ValueError)):
        load_embeddings(bad)
    assert not marker.exists()


# ---------------------------------------------------------------------------- NaN, OOM


@pytest.mark.slow
def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(
    tiny_dirs, tmp_path, monkeypatch
):
    from media_retrieval.models import CNNLSTM

    real_parts = CNNLSTM.encode_parts  # what the training step trains

    def parts(self, batch):
        z, obj = real_parts(self, batch)
        return (
            (z * float("nan"), obj * float("nan"))
            if self.training and self.current_epoch >= 2
            else (z, obj)
        )

    monkeypatch.setattr(CNNLSTM, "encode_parts", parts)
    cfg = _cfg(tiny_dirs, tmp_path, ["trainer.max_epochs=5"])
    with pytest.raises(
        TrainingDiverged, match="non-finite training loss.*last good checkpoint is .*last.ckpt"
    ):
        train(cfg)
    ck = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1  # the end of epoch 2 (index 1): the last one before the NaN
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())


def test_checkpoint_with_nan_weights_is_never_written(tmp_path):
    import lightning as L

    from media_retrieval.callbacks.resilience import FiniteWeightsGuard

    class M(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([float("nan")]))

    trainer = L.Trainer(logger=False, enable_checkpointing=False, callbacks=[FiniteWeightsGuard()])
    trainer.strategy.connect(M())
    (tmp_path / "last.ckpt").write_bytes(b"previous good checkpoint")
    with pytest.raises(TrainingDiverged, match="non-finite"):
        trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == b"previous good checkpoint"


def test_out_of_memory_suggests_a_smaller_batch(tiny_dirs, tmp_path, monkeypatch, capsys):
    from media_retrieval.models import CNNLSTM

    def encode_parts(self, batch):  # what the training and evaluation steps call
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(CNNLSTM, "encode_parts", encode_parts)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train, _cfg(tiny_dirs, tmp_path, ["trainer.max_epochs=1"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: out of memory") and "data.batch_size" in err


# ---------------------------------------------------------------------------- signals


def _wait_for(pred, timeout: float = 240) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and not pred():
        time.sleep(0.1)
    return bool(pred())


def _default_sigint() -> None:
    """In the child before exec: SIGINT as a terminal's Ctrl-C delivers it. Tests started in the
    background by a non-interactive shell (``make test &``, nohup, some CI runners) ignore
    SIGINT, a child inherits that, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigterm_during_training_saves_checkpoint_and_exits_cleanly(tiny_dirs, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *tiny_overrides(*tiny_dirs),
        "trainer.max_epochs=200",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: (out / "checkpoints" / "last.ckpt").is_file())
    before = (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error: terminated by SIGTERM") and "on_sigterm.ckpt" in last_line
    saved = out / "checkpoints" / "on_sigterm.ckpt"
    ck = torch.load(saved, map_location="cpu", weights_only=True)
    assert (
        out / "checkpoints" / "last.ckpt"
    ).stat().st_mtime_ns >= before  # earlier checkpoint kept
    # resume from it and finish
    epochs = ck["epoch"] + 2
    r = run_script(
        "train.py",
        [
            *tiny_overrides(*tiny_dirs),
            f"trainer.max_epochs={epochs}",
            f"ckpt_path={saved}",
            f"hydra.run.dir={out}",
        ],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "retrieval" / "results.json").is_file()


@pytest.mark.slow
def test_ctrl_c_during_indexing_resumes(tmp_path):
    from helpers.media_library import make_library

    from media_retrieval.retrieval.index_store import IndexStore

    media, index = tmp_path / "media", tmp_path / "index"
    make_library(media)
    # faulthandler: should the build die of a signal, its stderr says where
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    cmd = [
        sys.executable,
        str(ROOT / "src" / "index.py"),
        f"media_dir={media}",
        f"index_dir={index}",
        "model.temporal.cell=none",
        "clip.frames=16",
        "clip.image_size=160",
        "clip.chunk_s=2",
        "batch_size=1",
        "num_workers=0",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={tmp_path / 'h'}",
    ]
    log = tmp_path / "stderr.txt"  # a file, not a pipe nobody reads while the build runs
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=stderr, stderr=stderr, preexec_fn=_default_sigint
        )
        started = _wait_for(
            lambda: (
                len(list((index / "work").glob("*/shard-*.keys.json"))) >= 3
                or proc.poll() is not None
            )
        )
        assert started and proc.poll() is None, (
            f"the build ended (exit {proc.poll()}) before it could be interrupted: "
            f"{log.read_text()[-3000:]}"
        )
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err.strip().splitlines()[-1] and "run the same command again" in err
    assert IndexStore(index).current() is None
    kept = len(list((index / "work").glob("*/shard-*.keys.json")))
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{kept} from an interrupted build" in r.stdout + r.stderr
    assert len(IndexStore(index).segments()) == 24


def test_ctrl_c_is_recorded_and_raised_at_the_batch_end():
    """The handler only records a first Ctrl-C (so it cannot be lost inside native code); the
    batch end raises it, after the shard writer; a second Ctrl-C raises at once."""
    from media_retrieval.retrieval.shards import CtrlCAfterBatch

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    before = signal.getsignal(signal.SIGINT)
    stop = CtrlCAfterBatch()
    stop.on_predict_start(None, None)
    try:
        assert signal.getsignal(signal.SIGINT) is not before
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # Python runs the handler at the next bytecode: no exception here
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            stop.on_predict_batch_end(None)
        assert signal.getsignal(signal.SIGINT) is before  # restored once raised
    finally:
        stop.on_exception(None, None, KeyboardInterrupt())
        assert signal.getsignal(signal.SIGINT) is before
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # started with nohup or &: left alone
        CtrlCAfterBatch().on_predict_start(None, None)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, outer)


# ---------------------------------------------------------------------------- full disk


def test_full_disk_while_writing_results_keeps_the_previous_file(tmp_path, monkeypatch):
    from media_retrieval.reporting.tables import write_json

    path = tmp_path / "results.json"
    write_json([{"a": 1}], path)
    real = Path.write_text

    def full(self, *a, **k):
        if ".tmp" in self.name:  # the temporary file beside results.json
            real(self, "[{")  # half written ...
            raise OSError(28, "No space left on device")  # ... when the disk fills
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(
        MediaRetrievalError, match="No space left on device.*previous file is unchanged"
    ):
        write_json([{"a": 2}], path)
    assert json.loads(path.read_text()) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_full_disk_while_writing_index_shards_resumes(tmp_path, monkeypatch):
    from helpers.media_library import make_library

    import media_retrieval.utils.shard_store as pw
    from media_retrieval.cli.index import run_index
    from media_retrieval.retrieval.index_store import IndexStore

    media = tmp_path / "media"
    make_library(media, long_s=3.0)
    overrides = [
        f"media_dir={media}",
        f"index_dir={tmp_path / 'index'}",
        "model.temporal.cell=none",
        "clip.frames=2",
        "clip.image_size=32",
        "batch_size=2",
        "num_workers=0",
        "trainer.accelerator=cpu",
    ]
    real, calls = np.save, {"n": 0}

    def save(file, arr, **kw):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(28, "No space left on device")
        return real(file, arr, **kw)

    monkeypatch.setattr(pw.np, "save", save)
    cfg = compose_cfg("index.yaml", overrides, tmp_path / "o1")
    GlobalHydra.instance().clear()
    with pytest.raises(
        MediaRetrievalError, match="No space left on device.*finished shards are kept"
    ):
        run_index(cfg)
    shards = list((tmp_path / "index" / "work").glob("*/shard-*.keys.json"))
    assert len(shards) == 2 and not list((tmp_path / "index" / "work").glob("*/.*tmp*"))
    monkeypatch.setattr(pw.np, "save", real)
    cfg = compose_cfg("index.yaml", overrides, tmp_path / "o2")
    GlobalHydra.instance().clear()
    stats = run_index(cfg)
    assert stats["embedded"] == stats["segments"] - 4  # the 2 shards x batch 2 were not redone
    assert len(IndexStore(tmp_path / "index").segments()) == stats["segments"]


# ---------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["data.batchsize=3"],
            "Could not override 'data.batchsize' (Key 'batchsize' is not in struct",
        ),
        (
            ["model=c3d", "model.backbone.name=resnet18"],
            "model=c3d is a 3D CNN with no 2D backbone",
        ),
        (["model=c3d", "+model.backbone.name=resnet18"], "model=c3d has no 2D backbone"),
        (["retrieval.k=[0,5]"], "retrieval.k must be a list of integers >= 1"),
        (["retrieval.par.delta=1.5"], "retrieval.par.delta=1.5: a number in [-1, 1]"),
        (["data.batch_size=abc"], "data.batch_size must be an integer, got 'abc'"),
        (["model.lr=-1"], "model.lr must be >= 0.0"),
    ],
)
def test_bad_config_fails_at_startup_with_one_line(overrides, message, tmp_path):
    # the data root does not exist: the config error must come first, before any data is read
    r = run_script(
        "train.py", [*overrides, f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path}"]
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], r.stderr[-1500:]
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        ("train.yaml", ["data.clip.frames=abc"], "data.clip.frames must be an integer, got 'abc'"),
        (
            "train.yaml",
            ["data=cross", "data.min_clips=lots"],
            "data.min_clips must be an integer, got 'lots'",
        ),
        (
            "train.yaml",
            ["model=c3d", "model.width=wide"],
            "model.width must be a number, got 'wide'",
        ),
        (
            "train.yaml",
            ["data.augment.enabled=maybe"],
            "data.augment.enabled must be true or false, got 'maybe'",
        ),
        ("train.yaml", ["data=folder", "data.dedup=false"], "Could not override 'data.dedup'"),
        (
            "train.yaml",
            ["model.temporal.cell=rnn"],
            "model.temporal.cell='rnn'; valid: lstm, gru, none",
        ),
        ("train.yaml", ["model.loss.name=hinge"], "model.loss.name='hinge'; valid: ce, triplet"),
        (
            "index.yaml",
            ["index.options.nprobe=1.5"],
            "index.options.nprobe must be an integer, got '1.5'",
        ),
        (
            "index.yaml",
            ["clip.sampling=random"],
            "clip.sampling='random'; valid: index, time",
        ),
    ],
)
def test_type_and_choice_errors_fail_at_composition_before_torch_loads(config, overrides, message):
    """The structured-config schemas (media_retrieval/config/) catch these when the
    config is composed: one line, exit 2, and torch is never imported."""
    code = (
        "import atexit, sys; atexit.register(lambda: print('torch imported:', 'torch' in "
        "sys.modules, "
        f"file=sys.stderr)); sys.argv = ['x', *{overrides!r}]; "
        f"from media_retrieval.cli.launch import launch; launch({config!r}, 'no.such.module:task')"
    )
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )
    assert r.returncode == 2, r.stderr[-1500:]
    lines = r.stderr.strip().splitlines()
    assert lines[-2].startswith("error: ") and message in lines[-2], r.stderr[-1500:]
    assert lines[-1] == "torch imported: False"


def test_composed_configs_are_typed_for_in_process_callers(tiny_dirs, tmp_path):
    """Composing without the launcher (tests, notebooks) gets the same schema checks."""
    from hydra.errors import ConfigCompositionException

    for name in ("builtin", "folder", "cifar10", "oxford5k", "cross", "kth"):
        cfg = compose_cfg("train.yaml", [f"data={name}"], tmp_path)
        assert type(cfg.data.clip.frames) is int and cfg.data.augment.hflip >= 0
    with pytest.raises(ConfigCompositionException):
        compose_cfg("train.yaml", [*tiny_overrides(*tiny_dirs), "data.batch_size=many"], tmp_path)
    GlobalHydra.instance().clear()


def test_train_split_file_and_metrics_are_seed_deterministic(tiny_dirs, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        cfg = _cfg(tiny_dirs, out, ["trainer.max_epochs=2", "seed=3", "trainer.deterministic=true"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
        train(cfg)
        outs.append(out)
    assert (outs[0] / "split.csv").read_bytes() == (outs[1] / "split.csv").read_bytes()
    assert _headline(outs[0]) == _headline(outs[1])


def test_a_damaged_run_folder_is_one_failed_row_of_the_report(tmp_path):
    """A run's files are data: unreadable results.json or .hydra config make that run a failed
    row saying which file, and the report of the other runs is written."""
    from media_retrieval.reporting.report import write_report

    bad = tmp_path / "runs" / "bad"
    (bad / "retrieval").mkdir(parents=True)
    (bad / ".hydra").mkdir()
    (bad / "retrieval" / "results.json").write_text("{not json")
    (bad / ".hydra" / "config.yaml").write_text(": : bad: [")
    odd = tmp_path / "runs" / "odd"
    (odd / "retrieval").mkdir(parents=True)
    (odd / "retrieval" / "results.json").write_text('["a row that is not an object"]')
    text = write_report([tmp_path / "runs"], tmp_path / "report" / "report.md", k=5).read_text()
    assert "| bad | failed: retrieval/results.json cannot be read (Expecting property name" in text
    assert "| odd | failed: retrieval/results.json holds rows that are not objects" in text
