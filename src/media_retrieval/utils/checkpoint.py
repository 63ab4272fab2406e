"""Checkpoints: loaded without executing code from them, written so a full disk or a kill
never leaves a truncated file where a good one was."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from media_retrieval.errors import ConfigError
from media_retrieval.utils.files import atomic_write_bytes, remove_stale_temps

log = logging.getLogger(__name__)


def load_model(
    cls: type[L.LightningModule], ckpt_path: str | Path, **overrides: Any
) -> L.LightningModule:
    """``cls.load_from_checkpoint`` with ``weights_only=True``: a checkpoint holding a pickled
    payload is refused instead of run. ``overrides`` replace stored hyper-parameters."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: file not found")
    try:
        return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True, **overrides)
    except Exception as exc:
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} cannot be loaded safely: {exc}") from exc


class AtomicCheckpointIO(TorchCheckpointIO):
    """Serialise in memory, write a temporary file in the target folder, fsync, rename.

    Lightning's own writer streams into place, so a full disk mid-write leaves ``last.ckpt``
    truncated and the documented resume fails; here the previous file stays whole."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        folder = Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        swept = self.__dict__.setdefault("_swept", set())
        if folder not in swept:  # a killed earlier run's half-written temporary files
            swept.add(folder)
            for p in remove_stale_temps(folder):
                log.info("removed %s, left by an interrupted checkpoint write", p)
        atomic_write_bytes(path, buf.getbuffer())

    def remove_checkpoint(self, path: str | Path) -> None:
        """A checkpoint that is already gone (deleted by hand before a resume, which still
        tracks it as a top-k file) is nothing to remove, not a crash at the next save."""
        try:
            super().remove_checkpoint(path)
        except FileNotFoundError:
            log.info("%s was already removed", path)


def is_intact(path: str | Path) -> bool:
    """Does the file load as a checkpoint (weights and training state only)?"""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, pickled code, not a checkpoint at all: not usable
        return False
    return isinstance(ckpt, dict) and "state_dict" in ckpt


def newest_intact(folder: str | Path, first: Path | None = None) -> Path | None:
    """``first`` when it loads, else the most recent checkpoint in ``folder`` that does."""
    candidates = ([first] if first is not None else []) + sorted(
        (p for p in Path(folder).glob("*.ckpt") if p != first),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    for p in candidates:
        if p.is_file() and is_intact(p):
            if first is not None and p != first:
                log.warning(
                    "%s is damaged (truncated or not a checkpoint): resuming from %s, the newest "
                    "intact one",
                    first,
                    p,
                )
            return p
    return None
