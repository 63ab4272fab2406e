"""The end of a Hydra multirun: which jobs failed, and an exit status that says so.

Jobs that stop on a user error write ``failure.json`` (and ``error.txt``) and the sweep goes
on: ablation grids hold impossible points on purpose (``readout=last_hc`` with a GRU). At
the end this callback lists the failed jobs and exits non-zero when every job failed, or when
any failed for a reason other than its configuration (missing data, a full disk, ...).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig


def in_multirun() -> bool:
    """Whether this job is one of a Hydra multirun (a sweep goes past its failures)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(out_dir: str | Path, err: Exception) -> None:
    """A job's user error as the files :class:`MultirunFailures` reads at the sweep's end."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.txt").write_text(f"{err}\n")
    (out / "failure.json").write_text(json.dumps({"kind": type(err).__name__, "message": str(err)}))


class MultirunFailures(Callback):
    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = self.sweep_dir or Path(config.hydra.sweep.dir)
        if not sweep.is_dir():
            return
        jobs = sorted((d for d in sweep.rglob(".hydra") if d.is_dir()), key=str)
        failed = []
        for hydra_dir in jobs:
            f = hydra_dir.parent / "failure.json"
            if f.is_file():
                try:
                    failed.append((hydra_dir.parent, json.loads(f.read_text())))
                except (OSError, ValueError):
                    failed.append(
                        (
                            hydra_dir.parent,
                            {"kind": "unknown", "message": "failure.json unreadable"},
                        )
                    )
        if not failed:
            return
        print(f"{len(failed)} of {len(jobs)} jobs failed:", file=sys.stderr)
        for d, info in failed:
            print(
                f"  {d.relative_to(sweep)}: {info.get('kind')}: {info.get('message')}",
                file=sys.stderr,
            )
        if len(failed) == len(jobs) or any(info.get("kind") != "ConfigError" for _, info in failed):
            why = (
                "every job failed"
                if len(failed) == len(jobs)
                else "a job failed for a reason other than its config"
            )
            print(f"error: multirun {sweep}: {why}", file=sys.stderr)
            sys.exit(1)
