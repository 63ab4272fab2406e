"""Embedding shards of an index build: every predicted batch lands on disk at once.

Each rank writes its own shard per batch (``trainer.devices=N`` shards the work) into a
:class:`~media_retrieval.utils.shard_store.ShardStore` (the engine the feature cache uses too),
so an interrupted build resumes by skipping the content keys already on disk, whatever rank or
batch produced them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from media_retrieval.errors import MediaRetrievalError
from media_retrieval.utils.shard_store import ShardStore


class EmbeddingShardWriter(BasePredictionWriter):
    def __init__(self, out_dir: str | Path, keys: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.store, self.keys = shard_store(out_dir), list(keys)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if prediction is None:  # every file of the batch failed to load (logged)
            return
        ids = prediction["sample_id"].cpu().numpy()
        keys = np.array([self.keys[i] for i in ids], dtype=str)
        emb = prediction["embedding"].detach().float().cpu().numpy()
        if not np.isfinite(emb).all():
            raise MediaRetrievalError(
                f"the model produced non-finite embeddings for {list(keys)[:3]}...: "
                "the checkpoint is broken (NaN weights?)"
            )
        self.store.write(keys.tolist(), emb)


def shard_store(work_dir: str | Path) -> ShardStore:
    """A build's finished batches: fsynced, since an index build may run for hours."""
    return ShardStore(work_dir, durable=True)
