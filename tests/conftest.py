"""Shared fixtures: a tiny built-in corpus and composed Hydra configs pointing at tmp dirs.

Configs are composed in-process (lightning-hydra-template style); subprocesses are used only
where the process boundary is the point (DDP, CLI error messages).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from media_retrieval.config.paths import real_clips_dir
from media_retrieval.config.store import register as register_schemas

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")
REAL_CLIPS = Path(
    real_clips_dir(str(ROOT))
)  # $MEDIA_RETRIEVAL_REAL_CLIPS, else ../shared/data/real-clips
# indexes the tests build are "built on this machine": recorded here, not in ~/.cache
os.environ.setdefault(
    "MEDIA_RETRIEVAL_TRUST_STORE", os.path.join(tempfile.mkdtemp(prefix="mr-trust-"), "trusted.txt")
)

register_schemas()  # the configs name their structured-config schemas (ConfigStore)

TINY_CLASSES = ["static", "zoom_in", "pulse", "blink", "zoom_out", "rotate"]


def tiny_overrides(data_root: Path, cache_dir: Path) -> list[str]:
    """Small but real: 6 motion classes x 5 clips x 2 styles of 2-3 s MP4s, 4 frames at 64 px.
    The test pool (style_b's 30 clips + 3 held-out style_a classes' 15) has an odd size, 45."""
    return [
        f"data.root={data_root}",
        f"paths.cache_dir={cache_dir}",
        "data.corpus.clips_per_class=5",
        "data.corpus.images_per_class=2",
        "data.corpus.min_duration_s=2",
        "data.corpus.max_duration_s=3",
        f"data.corpus.classes=[{','.join(TINY_CLASSES)}]",
        "data.held_out_classes=[zoom_out,blink,rotate]",
        "data.clip.frames=4",
        "data.clip.image_size=64",
        "data.batch_size=8",
        "data.eval_batch_size=4",
        "data.num_workers=0",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "logger=csv",
    ]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("tiny")
    return base / "corpus", base / "cache"


def compose_cfg(config_name: str, overrides: list[str], out_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose(config_name=config_name, return_hydra_config=False, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.log_dir = str(out_dir)
        cfg.paths.work_dir = str(ROOT)
    return cfg


@pytest.fixture
def cfg_train(tiny_dirs, tmp_path) -> DictConfig:
    yield compose_cfg("train.yaml", tiny_overrides(*tiny_dirs), tmp_path)
    GlobalHydra.instance().clear()


@pytest.fixture
def cfg_eval(tiny_dirs, tmp_path) -> DictConfig:
    yield compose_cfg("eval.yaml", tiny_overrides(*tiny_dirs), tmp_path)
    GlobalHydra.instance().clear()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (a service under test, or DDP's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(cmd: list[str], nodes: int = 2) -> list[subprocess.Popen]:
    """``nodes`` processes standing in for machines (1 CPU device each, gloo), started the way a
    scheduler starts one command per node: the same command, NODE_RANK 0..nodes-1."""
    port = str(free_port())
    env = {
        **os.environ,
        "PROJECT_ROOT": str(ROOT),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
        "WORLD_SIZE": str(nodes),
    }
    return [
        subprocess.Popen(
            cmd,
            env={**env, "NODE_RANK": str(node)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in range(nodes)
    ]


def run_script(
    script: str, overrides: list[str], timeout: int = 240
) -> subprocess.CompletedProcess:
    """Run src/<script> in a fresh process, as a user would."""
    env = {
        "WANDB_MODE": "disabled",
        **os.environ,
        "PROJECT_ROOT": str(ROOT),
        "HYDRA_FULL_ERROR": "0",
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / script), *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def require_real_clips() -> Path:
    if not REAL_CLIPS.is_dir():
        pytest.skip(
            f"real footage not found at {REAL_CLIPS} (see the README: tests read "
            "../shared/data/real-clips)"
        )
    return REAL_CLIPS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: with two workers (make test), a long test started last would keep
    one worker busy while the other is idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
