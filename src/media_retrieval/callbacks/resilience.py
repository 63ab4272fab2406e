"""Callbacks that make long runs survive interruption without changing their results.

- :class:`RNGStateCheckpoint` stores the Python / NumPy / torch (and CUDA) random states in
  every checkpoint and restores them on resume. Lightning restores weights, optimiser and
  loop state but not the random streams, so a run resumed from an epoch-boundary checkpoint
  would shuffle, augment and drop out differently from an uninterrupted one. With them
  restored, it does the same (tested: same final metrics).
- :class:`SigtermCheckpoint` saves ``checkpoints/on_sigterm.ckpt`` when the job is pre-empted
  (Lightning raises ``SIGTERMException`` in the loop on SIGTERM), so no finished work is lost.
  Lightning's own :class:`~lightning.pytorch.callbacks.OnExceptionCheckpoint` saves on *any*
  exception; a run stopped by a NaN loss must not leave a checkpoint of broken weights.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from media_retrieval.errors import TrainingDiverged

log = logging.getLogger(__name__)


class RNGStateCheckpoint(L.Callback):
    """Saved as plain tensors and lists, so checkpoints still load with ``weights_only=True``."""

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        py_state = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "gauss": float(np_state[4]),
            },
            "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state(
            ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
        )
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        log.info("random number generators restored from the checkpoint")


class SigtermCheckpoint(L.Callback):
    """On SIGTERM (pre-emption, ``scancel``, ``kill``), save a checkpoint to resume from."""

    def __init__(self, dirpath: str, filename: str = "on_sigterm") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.saved: Path | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.path)
        self.saved = self.path
        log.warning("SIGTERM: checkpoint saved to %s", self.path)


class FiniteWeightsGuard(L.Callback):
    """Refuse to write a checkpoint whose weights hold NaN or inf: ``last.ckpt`` keeps the last
    good weights however training diverges (the loss check in ``training_step`` stops the run
    one step later)."""

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        bad = [
            k
            for k, v in checkpoint.get("state_dict", {}).items()
            if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:
            raise TrainingDiverged(
                f"weights became non-finite ({bad[0]}{' and others' if len(bad) > 1 else ''}) at "
                f"epoch {trainer.current_epoch}: checkpoint not written"
            )
