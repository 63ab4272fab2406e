"""Embedding shards of an index build: every predicted batch lands on disk at once.

Each rank writes its own shard per batch (``trainer.devices=N`` shards the work), named by
the content keys it holds, so an interrupted build resumes by skipping the keys already on
disk, whatever rank or batch produced them. Shards are written to a temporary name and
renamed, so a killed process never leaves a shard that loads half-written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from media_retrieval.errors import MediaRetrievalError
from media_retrieval.utils.files import atomic_path


class EmbeddingShardWriter(BasePredictionWriter):
    def __init__(self, out_dir: str | Path, keys: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.out_dir, self.keys = Path(out_dir), list(keys)

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        if prediction is None:  # every file of the batch failed to load (logged)
            return
        ids = prediction["sample_id"].cpu().numpy()
        keys = np.array([self.keys[i] for i in ids], dtype=str)
        emb = prediction["embedding"].detach().float().cpu().numpy()
        if not np.isfinite(emb).all():
            raise MediaRetrievalError(f"the model produced non-finite embeddings for {list(keys)[:3]}...: "
                                      "the checkpoint is broken (NaN weights?)")
        write_shard(self.out_dir, keys, emb)


def write_shard(out_dir: Path, keys: np.ndarray, emb: np.ndarray) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha1("\n".join(keys.tolist()).encode()).hexdigest()[:20]
    path = out_dir / f"shard-{name}.npz"
    try:
        with atomic_path(path) as tmp:
            np.savez(tmp, keys=keys, embeddings=emb)
    except OSError as exc:
        raise MediaRetrievalError(f"cannot write index shard to {out_dir} ({exc.strerror or exc}); "
                                  "finished shards are kept: free space and run the same command again") from exc
    return path


def read_shards(out_dir: Path) -> dict[str, np.ndarray]:
    """key -> embedding, from every finished shard (partial temporary files are ignored)."""
    found: dict[str, np.ndarray] = {}
    if not out_dir.is_dir():
        return found
    for f in sorted(out_dir.glob("shard-*.npz")):
        try:
            with np.load(f, allow_pickle=False) as z:
                for k, e in zip(z["keys"].tolist(), z["embeddings"], strict=True):
                    found.setdefault(k, e)
        except (OSError, ValueError, KeyError):
            f.unlink(missing_ok=True)  # unreadable: recompute its items
    return found
