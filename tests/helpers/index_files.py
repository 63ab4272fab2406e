"""Editing an index folder as someone who hands over a hostile one would (security tests)."""

from __future__ import annotations

import json
from pathlib import Path

from media_retrieval.utils.files import sha256_file


def live_generation(index: Path) -> Path:
    """The generation folder ``CURRENT`` names."""
    return index / (index / "CURRENT").read_text().strip()


def resign(gen: Path) -> None:
    """What an attacker who edits files would also do: rewrite the manifest's checksums."""
    m = json.loads((gen / "manifest.json").read_text())
    m["files"] = {
        f.relative_to(gen).as_posix(): {"size": f.stat().st_size, "sha256": sha256_file(f)}
        for f in sorted(gen.rglob("*"))
        if f.is_file() and f.name != "manifest.json"
    }
    (gen / "manifest.json").write_text(json.dumps(m))


#: the cheapest model that indexes: mean of 2 Lite0 frame features at 48 px, 2 s chunks
TINY_MODEL = [
    "model.temporal.cell=none",
    "clip.frames=2",
    "clip.image_size=48",
    "clip.chunk_s=2",
    "num_workers=0",
    "trainer.accelerator=cpu",
    "batch_size=8",
]


def index_folder(
    media: Path, index: Path, out: Path, extra: list[str] | tuple[str, ...] = ()
) -> dict:
    """``src/index.py`` in-process with :data:`TINY_MODEL`; its summary."""
    from conftest import compose_cfg
    from hydra.core.global_hydra import GlobalHydra

    from media_retrieval.cli.index import run_index

    cfg = compose_cfg(
        "index.yaml", [f"media_dir={media}", f"index_dir={index}", *TINY_MODEL, *extra], out
    )
    GlobalHydra.instance().clear()
    return run_index(cfg)
