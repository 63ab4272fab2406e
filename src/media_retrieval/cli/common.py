"""Turning user errors into one line (exit 2) or, in a multirun, a failed job the sweep goes
past; and the one import of what the entry points build from config."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from media_retrieval.config_checks import validate_config  # noqa: F401 - the entry points' one import
from media_retrieval.errors import user_error
from media_retrieval.plugins import import_plugins
from media_retrieval.utils.instantiate import build, build_callbacks, build_loggers  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_cli(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an entry point; a user-fixable error ends with one clear line and exit code 2.

    In a Hydra multirun (sweeps, ablations) the error is written to the job's ``error.txt``
    and the sweep goes on to its next job: one impossible combination must not stop the study."""
    try:
        import_plugins(
            cfg.get("plugins") or []
        )  # before anything is built: their registrations count
        return fn(cfg)
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        if _in_multirun():
            out = Path(cfg.paths.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "error.txt").write_text(f"{err}\n")
            (out / "failure.json").write_text(
                json.dumps({"kind": type(err).__name__, "message": str(err)})
            )
            log.error("job failed, sweep continues: %s", err)
            return None
        sys.exit(getattr(err, "exit_code", 2))
