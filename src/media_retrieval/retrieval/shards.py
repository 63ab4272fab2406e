"""Embedding shards of an index build: every predicted batch lands on disk at once.

Each rank writes its own shard per batch (``trainer.devices=N`` shards the work) into a
:class:`~media_retrieval.utils.shard_store.ShardStore` (the engine the feature cache uses too),
so an interrupted build resumes by skipping the content keys already on disk, whatever rank or
batch produced them. Ctrl-C stops a build after the batch in hand is written
(:class:`CtrlCAfterBatch`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from media_retrieval.errors import MediaRetrievalError
from media_retrieval.utils.shard_store import ShardStore

log = logging.getLogger(__name__)


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


class CtrlCAfterBatch(L.Callback):
    """Ctrl-C during prediction stops the run at the next batch end, after the shard writer.

    Why not Lightning's own handling alone: Python raises ``KeyboardInterrupt`` wherever the
    main thread happens to be, and where that is inside a finalizer or a callback from native
    code (a decoder or tensor freed mid-batch) the exception is printed as "ignored" and lost:
    an index build once ran to its end as if no Ctrl-C had come (in the test suite, under
    load). A handler that only records the request cannot be lost; the ``KeyboardInterrupt``
    is raised here, in plain Python, and Lightning's graceful shutdown follows as before. A
    second Ctrl-C interrupts at once. Where SIGINT is ignored (started with ``nohup`` or ``&``)
    or the run is not on the main thread, nothing is installed.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _request(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this batch is saved (press again to stop at once)")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.SIG_IGN:
            return
        self._previous = previous
        signal.signal(signal.SIGINT, self._request)

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.requested:
            self._restore()
            raise KeyboardInterrupt

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
