"""Turning user errors into one line (exit 2) or, in a multirun, a failed job the sweep goes
past; and the one import of what the entry points build from config."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from media_retrieval.config_checks import validate_config  # noqa: F401 - the entry points' one import
from media_retrieval.errors import user_error
from media_retrieval.plugins import import_plugins
from media_retrieval.utils.multirun import in_multirun, record_failure

log = logging.getLogger(__name__)


def run_cli(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an entry point; a user-fixable error ends with one clear line and exit code 2.

    In a Hydra multirun (sweeps, ablations) the error is written to the job's ``error.txt``
    and the sweep goes on to its next job: one impossible combination must not stop the study."""
    try:
        import_plugins(cfg.get("plugins") or [])  # before anything is built: they register
        return fn(cfg)
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        if in_multirun():
            record_failure(cfg.paths.output_dir, err)
            log.error("job failed, sweep continues: %s", err)
            return None
        sys.exit(getattr(err, "exit_code", 2))
