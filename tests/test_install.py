"""The package installed from a wheel (not the repository) runs its commands from another
directory: configs travel inside the package, outputs land under the working directory."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from helpers.media_library import CLASSES, write_image, write_video


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding only the wheel, seeing the project venv's packages (what
    ``--system-site-packages`` does for a system Python: here a .pth, since the project's
    packages live in a venv); the wheel is built offline (setuptools from that venv)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src-copy"
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = base / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv_site,) = (venv / "lib").glob("python3*/site-packages")
    (venv_site / "project-venv.pth").write_text(site.getsitepackages()[0] + "\n")
    (wheel,) = wheels.glob("media_retrieval-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return venv


def run(venv: Path, args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PROJECT_ROOT", "MEDIA_RETRIEVAL_HOME")
    }
    return subprocess.run(
        args,
        cwd=cwd,
        env={**env, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_installed_commands_index_and_search_from_another_directory(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run(
        installed,
        [
            str(installed / "bin" / "python"),
            "-c",
            "import media_retrieval; print(media_retrieval.__file__)",
        ],
        work,
    )
    assert (
        where.returncode == 0 and str(installed) in where.stdout
    )  # the wheel's copy, not the repository's
    helped = run(installed, [str(installed / "bin" / "media-retrieval"), "--help"], work)
    assert helped.returncode == 0 and all(
        c in helped.stdout for c in ("train", "index", "search", "serve")
    )
    as_module = run(
        installed, [str(installed / "bin" / "python"), "-m", "media_retrieval", "--help"], work
    )
    assert as_module.returncode == 0 and as_module.stdout == helped.stdout
    typo = run(
        installed,
        [str(installed / "bin" / "media-retrieval"), "index", "index.backendd=exact"],
        work,
    )
    assert typo.returncode == 2 and typo.stderr.startswith(
        "error:"
    )  # configs found inside the package

    media = tmp_path / "media"
    clip = write_video(media / CLASSES[0] / "a.mp4", CLASSES[0], 1.0, seed=1)
    write_video(media / CLASSES[1] / "b.mp4", CLASSES[1], 1.0, seed=2)
    write_image(media / CLASSES[1] / "c.png", CLASSES[1], seed=3)
    model = [
        "model.temporal.cell=none",
        "model.temporal.stats=[]",
        "clip.frames=4",
        "clip.image_size=64",
        "num_workers=0",
        "trainer.accelerator=cpu",
        "batch_size=4",
    ]
    built = run(
        installed,
        [
            str(installed / "bin" / "media-retrieval"),
            "index",
            f"media_dir={media}",
            f"index_dir={tmp_path / 'index'}",
            *model,
        ],
        work,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    assert (
        work / "logs" / "index"
    ).is_dir()  # outputs under the working directory (the default root)
    found = run(
        installed,
        [
            str(installed / "bin" / "media-retrieval"),
            "search",
            f"index_dir={tmp_path / 'index'}",
            f"query={clip}",
            "output=json",
            "k=3",
        ],
        work,
    )
    assert found.returncode == 0, found.stderr[-2000:]
    results = json.loads(found.stdout)
    assert results[0]["results"][0]["rel_path"] == f"{CLASSES[0]}/a.mp4"


def test_command_dispatch(capsys):
    """One entry point, subcommands named once: --help lists them, an unknown one is one line and
    exit 2."""
    from media_retrieval.cli.main import COMMANDS, main

    main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS) and "MEDIA_RETRIEVAL_HOME" in out
    with pytest.raises(SystemExit) as exc:
        main(["trian"])
    assert exc.value.code == 2 and "unknown command 'trian'" in capsys.readouterr().err
    for config, task, _ in COMMANDS.values():  # every command's root config and task exist
        from importlib import import_module

        from media_retrieval.cli.launch import CONFIG_DIR

        module, _, fn = task.partition(":")
        assert (CONFIG_DIR / config).is_file() and callable(getattr(import_module(module), fn))


def test_home_dir_order(monkeypatch, tmp_path):
    """paths.root_dir: $MEDIA_RETRIEVAL_HOME, else $PROJECT_ROOT (src/*.py), else the working
    directory."""
    from media_retrieval.config.paths import home_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDIA_RETRIEVAL_HOME", raising=False)
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    assert home_dir() == str(tmp_path)
    monkeypatch.setenv("PROJECT_ROOT", "/srv/repo")
    assert home_dir() == "/srv/repo"
    monkeypatch.setenv("MEDIA_RETRIEVAL_HOME", "/data/mr")
    assert home_dir() == "/data/mr"


def _until_exit(argv: list[str], run: str) -> list[str]:
    """Start an entry point in a fresh interpreter as ``argv`` (``run``: ``runpy.run_path(...)`` or
    ``runpy.run_module(...)``) and catch its exit: its stderr lines, the last one
    ``EXIT <code> HEAVY [<heavy modules imported by then>]``."""
    code = (
        f"import runpy, sys\nsys.argv = {argv!r}\n"
        f"try:\n    {run}\n"
        "except SystemExit as e:\n"
        "    heavy = sorted(m for m in ('torch', 'lightning', 'torchvision') if m in sys.modules)\n"
        "    print('EXIT', e.code, 'HEAVY', heavy, file=sys.stderr)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    return r.stderr.strip().splitlines()


@pytest.mark.parametrize("how", ["script", "module"])
def test_a_bad_value_is_reported_before_torch_is_imported_in_the_users_own_words(how, tmp_path):
    """``k=five`` ends with one line before torch or Lightning is loaded (the check needs only the
    config), and the hint names the command the way it was run."""
    if how == "script":
        lines = _until_exit(
            ["src/search.py", "index_dir=x", "query=y", "k=five"],
            f"runpy.run_path({str(ROOT / 'src' / 'search.py')!r}, run_name='__main__')",
        )
    else:
        lines = _until_exit(
            [
                str(ROOT / "src" / "media_retrieval" / "__main__.py"),
                "search",
                "index_dir=x",
                "query=y",
                "k=five",
            ],
            "runpy.run_module('media_retrieval', run_name='__main__')",
        )
    assert lines[-1] == "EXIT 2 HEAVY []", "\n".join(lines[-20:])
    hint = (
        f"python {ROOT / 'src' / 'search.py'} --cfg job"
        if how == "script"
        else "media-retrieval search --cfg job"
    )
    assert lines[-2] == f"error: k must be an integer, got 'five'; `{hint}` shows the config"


def test_every_missing_dataset_is_listed_at_once_before_torch_is_imported(tmp_path):
    """The paper's experiment without its four datasets: one line names all four, each with its
    override and what to fetch, before torch or Lightning is loaded."""
    lines = _until_exit(
        ["src/train.py", "experiment=paper_cnn_lstm", f"paths.data_dir={tmp_path}"],
        f"runpy.run_path({str(ROOT / 'src' / 'train.py')!r}, run_name='__main__')",
    )
    assert lines[-1] == "EXIT 2 HEAVY []", "\n".join(lines[-20:])
    assert lines[-2].startswith("error: 4 dataset folders are missing: ")
    for key, name, fetch in (
        ("data.source.root", "UCF50", "UCF50.rar"),
        ("data.targets.ucf101", "UCF-101", "UCF101.rar"),
        ("data.targets.hmdb51", "hmdb51", "hmdb51_org.rar"),
        ("data.targets.kth", "kth", "_avi.zip"),
    ):
        assert (
            f"{key}: {tmp_path / name} does not exist or is not a folder; get " in lines[-2]
            and fetch in lines[-2]
        )


def test_weights_that_cannot_be_fetched_end_the_run_before_torch_is_imported(tmp_path, monkeypatch):
    """Table II's experiment needs timm's MobileNet V1 ImageNet weights: with no cache and no
    route to the hub, one line says what to fetch and where, before torch (it took 104 s of
    retries and two failed sweep jobs)."""
    for var in ("HF_HOME", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves (RFC 2606)
    lines = _until_exit(
        [
            "src/train.py",
            "experiment=color_vs_gray",
            f"paths.data_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        f"runpy.run_path({str(ROOT / 'src' / 'train.py')!r}, run_name='__main__')",
    )
    assert lines[-1] == "EXIT 2 HEAVY []", "\n".join(lines[-20:])
    assert (
        lines[-2].startswith(
            "error: model.backbone.name=mobilenetv1_100: no ImageNet weights for it are cached here"
        )
        and "model.backbone.weights=/path/to/state_dict.pth" in lines[-2]
    )
    from omegaconf import OmegaConf

    from media_retrieval.config_checks import _check_weights
    from media_retrieval.errors import WeightsUnavailableError

    wanted = OmegaConf.create(
        {"model": {"backbone": {"name": "mobilenetv1_100", "weights": "imagenet"}}}
    )
    with pytest.raises(WeightsUnavailableError):
        _check_weights(wanted)
    snapshot = (
        tmp_path
        / "HF_HOME"
        / "hub"
        / "models--timm--mobilenetv1_100.ra4_e3600_r224_in1k"
        / "snapshots"
        / "1"
    )
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"")
    _check_weights(wanted)  # in the cache timm reads: nothing to say


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_quoting_hint_reaches_hydra_intact_in_the_users_shell(shell):
    """The hint for an override Hydra cannot read is one word in the user's $SHELL that Hydra
    then reads back as exactly the value (spaces, accents, quotes, backslashes)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from media_retrieval.config_checks import quoted_override

    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed here")
    parser = OverridesParser.create()
    for value in [
        "clips/café (1).avi",
        "it's here.mp4",
        'say "hi".mp4',
        "C:\\clips\\a b\\",
        "a,b=[c]{d}.mp4",
    ]:
        word = quoted_override("query", value, shell)
        got = subprocess.run(
            [exe, "-c", f"printf '%s' {word}"], capture_output=True, text=True, timeout=30
        ).stdout
        assert parser.parse_overrides([got])[0].value() == value, (shell, word, got)


def test_make_dev_installs_this_clone_without_touching_the_shared_environment(tmp_path):
    """``make dev``: a venv of this clone's own that sees the shared .venv's packages; the
    ``media-retrieval`` command runs from it, and the shared environment gains no install."""
    shared = Path(
        subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    before = sorted(p.name for p in shared.iterdir())
    dev = tmp_path / "dev"
    r = subprocess.run(
        ["make", "-s", "dev", f"DEV_DIR={dev}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(
        [str(dev / "bin" / "media-retrieval"), "search", "k=five"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and r.stderr.strip().endswith(
        "`media-retrieval search --cfg job` shows the config"
    )
    assert sorted(p.name for p in shared.iterdir()) == before
