"""Loading checkpoints without executing code from them."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from media_retrieval.errors import ConfigError


def load_model(cls: type[L.LightningModule], ckpt_path: str | Path) -> L.LightningModule:
    """``cls.load_from_checkpoint`` with ``weights_only=True``: a checkpoint holding a pickled
    payload is refused instead of run."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: file not found")
    try:
        return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} cannot be loaded safely: {exc}") from exc
