"""How every entry point starts: :func:`launch` checks the command-line overrides
(:func:`~media_retrieval.config_checks.check_overrides`: one line and exit 2 on a typo'd key or
a bad value, before the heavy imports), then runs the task under Hydra with the package's
configs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from media_retrieval.errors import MediaRetrievalError
from media_retrieval.plugins import plugins_from_argv

#: the configs ship inside the package (``configs/`` at the repository root links here)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def launch(config_name: str, task: str) -> Any:
    """Run ``task`` (``"module:function"``, called with the composed config) as a Hydra app on
    ``configs/<config_name>``: overrides checked first, user errors one line (exit 2), and in a
    multirun one failed job the sweep goes past. Returns what the task returns (sweepers read
    it)."""
    import hydra  # noqa: PLC0415 - hydra stays unloaded until used

    from media_retrieval.config.store import register  # noqa: PLC0415 - config.store (and what it loads) stays unloaded until used

    register()  # the configs name their schemas
    try:
        sys.argv[1:] = plugins_from_argv(sys.argv[1:])
        precheck_overrides(config_name)
    except MediaRetrievalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    module, _, name = task.partition(":")

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def main(cfg: Any) -> Any:
        from media_retrieval.cli.common import run_cli  # noqa: PLC0415 - cli.common (and what it loads) stays unloaded until used
        from media_retrieval.utils.logs import each_line_once  # noqa: PLC0415 - logging set up once Hydra's is

        each_line_once()

        return run_cli(getattr(importlib.import_module(module), name), cfg)

    return main()


def precheck_overrides(config_name: str, argv: list[str] | None = None) -> None:
    """Check the overrides of a single run; sweeps (-m, a,b lists), --cfg/--help/--info and
    Hydra's own keys are left to Hydra."""
    from media_retrieval.config_checks import check_overrides  # noqa: PLC0415 - config_checks (and what it loads) stays unloaded until used

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("-") for a in args):
        check_overrides(
            CONFIG_DIR, config_name, [a for a in args if not a.lstrip("+~").startswith("hydra.")]
        )
