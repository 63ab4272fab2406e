"""The run's config as logged hyper-parameters (what W&B shows as a run's config)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf


def flat_hparams(
    cfg: DictConfig, locked: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The resolved config as dotted keys (``model.temporal.cell``), the form W&B sweeps use.

    Keys in ``locked`` (set by a W&B sweep for this run) are left out: the sweep already
    recorded them, and re-logging could only repeat or silently overwrite the sweep's value
    (Lightning's WandbLogger updates with ``allow_val_change=True``)."""
    hp = OmegaConf.to_container(cfg, resolve=True)
    hp.pop("hydra", None)
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", hp)
    return {
        k: v
        for k, v in out.items()
        if k not in locked and not any(k.startswith(f"{lk}.") for lk in locked)
    }


def _sweep_locked_keys(logger: Any) -> set[str]:
    """Config keys a W&B sweep set for this run (empty outside sweeps)."""
    if not os.environ.get("WANDB_SWEEP_ID") or type(logger).__name__ != "WandbLogger":
        return set()
    try:
        return set(logger.experiment.config.keys())
    except Exception:  # disabled/offline run objects may lack a config
        return set()


def log_hyperparameters(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Send the resolved config to every logger (what W&B shows as the run's config)."""
    for lg in trainer.loggers:
        lg.log_hyperparams(flat_hparams(cfg, _sweep_locked_keys(lg)))
        if type(lg).__name__ == "WandbLogger" and cfg.get("optimized_metric"):
            # the run's summary holds the best epoch, not the last: what sweeps compare
            with contextlib.suppress(Exception):  # disabled runs may not support it
                lg.experiment.define_metric(cfg.optimized_metric, summary="max")
