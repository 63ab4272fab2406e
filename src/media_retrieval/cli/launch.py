"""How every entry point starts: :func:`launch` checks the command-line overrides, then runs
the task under Hydra with the repository's configs.

The overrides are checked before Hydra runs the job, for one line on a typo'd key: Hydra reports an unknown key over several lines (plus a hint about HYDRA_FULL_ERROR) and exits
with 1; composing the config first turns that into ``error: ...`` and exit code 2, the same
as every other start-up error. Only hydra and omegaconf are imported: this runs before the
heavy imports.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

from media_retrieval.errors import MediaRetrievalError, command
from media_retrieval.plugins import plugins_from_argv

#: the configs ship inside the package (``configs/`` at the repository root links here)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def launch(config_name: str, task: str) -> Any:
    """Run ``task`` (``"module:function"``, called with the composed config) as a Hydra app on
    ``configs/<config_name>``: overrides checked first, user errors one line (exit 2), and in a
    multirun one failed job the sweep goes past. Returns what the task returns (sweepers read it)."""
    import hydra  # noqa: PLC0415 - hydra stays unloaded until used

    from media_retrieval.config_schema import register  # noqa: PLC0415 - config_schema (and what it loads) stays unloaded until used

    register()  # the configs name their schemas
    try:
        sys.argv[1:] = plugins_from_argv(sys.argv[1:])
    except MediaRetrievalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    precheck_overrides(config_name)
    module, _, name = task.partition(":")

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def main(cfg: Any) -> Any:
        from media_retrieval.cli.common import run_cli  # noqa: PLC0415 - cli.common (and what it loads) stays unloaded until used

        each_line_once()
        # Lightning's own use of a torch API it deprecated: nothing a user can act on
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

        return run_cli(getattr(importlib.import_module(module), name), cfg)

    return main()


class _LightningOnce(logging.Filter):
    """A filter for the root's console handler. Lightning prints its records through a console
    handler of its own (added when it is imported, i.e. after Hydra set up logging) and also
    passes them on to the root's, so each line appeared twice; while Lightning's handler is
    there, the root's console leaves those records to it (the run's log file still gets them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("lightning") and logging.getLogger("lightning").handlers)


class _NoTips(logging.Filter):
    """Lightning's start-up advertisements ("💡 Tip: ... try installing litlogger") and its
    "TPU available: False" line: lines of every run's output that say nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("💡 Tip", "TPU available: False"))


def each_line_once() -> None:
    """Install :class:`_LightningOnce` on the root's console handlers (Hydra's ``job_logging``),
    and :class:`_NoTips` on Lightning's rank-zero logger."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in tips.filters):
        tips.addFilter(_NoTips())
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(isinstance(f, _LightningOnce) for f in handler.filters):
            handler.addFilter(_LightningOnce())


def precheck_overrides(config_name: str, argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # sweeps (-m, a,b lists), --cfg/--help/--info and Hydra's own keys are left to Hydra
    if any(a.startswith("-") for a in args):
        return
    overrides = [a for a in args if not a.lstrip("+~").startswith("hydra.")]
    from hydra import compose, initialize_config_dir  # noqa: PLC0415 - hydra stays unloaded until used
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415 - hydra stays unloaded until used
    from hydra.errors import HydraException  # noqa: PLC0415 - hydra stays unloaded until used
    from omegaconf.errors import OmegaConfBaseException  # noqa: PLC0415 - omegaconf stays unloaded until used

    from media_retrieval.config_checks import check_values  # noqa: PLC0415 - config_checks (and what it loads) stays unloaded until used

    try:
        _check_syntax(overrides)
    except RecursionError:
        print("error: an override is nested too deeply to read (lists or dicts inside each other); flatten it",
              file=sys.stderr)
        sys.exit(2)
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose(config_name=config_name, overrides=overrides)
        check_values(cfg)  # config values only: before torch and Lightning are imported
    except (HydraException, OmegaConfBaseException, MediaRetrievalError) as exc:
        print(f"error: {_one_line(exc, overrides)}; `{command(config_name.replace('.yaml', ''))} --cfg job` shows the config",
              file=sys.stderr)
        sys.exit(2)
    except ValueError:  # sweep syntax (a,b) without -m: Hydra reports it
        return
    except RecursionError:
        print("error: an override is nested too deeply to read (lists or dicts inside each other); flatten it",
              file=sys.stderr)
        sys.exit(2)
    finally:
        GlobalHydra.instance().clear()


_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def _one_line(exc: Exception, overrides: list[str]) -> str:
    """Hydra's and OmegaConf's multi-line composition errors as one line that names the key."""
    from omegaconf.errors import ValidationError  # noqa: PLC0415 - omegaconf stays unloaded until used

    cause = exc.__cause__
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        m = re.search(r"Value (.*) of type '\w+' could not be converted to (\w+)", str(cause))
        if m:  # a schema type (media_retrieval/config_schema.py)
            return f"{cause.full_key} must be {_TYPE_WORDS.get(m.group(2), m.group(2))}, got {m.group(1)}"
        m = re.search(r"Value (.*) is not a valid bool", str(cause))
        if m:
            return f"{cause.full_key} must be true or false, got {m.group(1)}"
    text = f"{exc}\n{cause or ''}"
    video3d = next((a.split("=", 1)[1] for a in overrides if a.startswith("model=")
                    and not _has_backbone(a.split("=", 1)[1])), None)
    if video3d and "model.backbone" in text:
        return f"model={video3d} is a 3D CNN with no 2D backbone: model.backbone.* applies to cnn_lstm models"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    unknown = next((re.sub(r" not in '\w+'$", " is not in struct", ln) for ln in lines
                    if re.search(r"^Key '.*' (is )?not in ", ln)), "")
    return lines[0].rstrip(".") + (f" ({unknown})" if unknown and unknown != lines[0] else "")


def _has_backbone(model: str, depth: int = 0) -> bool:
    """Whether ``configs/model/<model>.yaml`` (or a model config it extends) gives the model a 2D
    backbone (3D CNNs have none): read from the configs, so a new model needs no name list here."""
    import yaml  # noqa: PLC0415 - yaml stays unloaded until an error needs it

    path = CONFIG_DIR / "model" / f"{model}.yaml"
    try:
        node = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        node = None
    if not isinstance(node, dict) or depth > 8:
        return True  # not ours to judge: say nothing about backbones
    parents = [d for d in node.get("defaults") or [] if isinstance(d, str) and "/" not in d and d != "_self_"]
    return "backbone" in node or any(_has_backbone(p, depth + 1) for p in parents if p != "_base")


def _check_syntax(overrides: list[str]) -> None:
    """An override Hydra's grammar cannot read is almost always an unquoted path (spaces,
    non-ASCII letters, ``( ) , = [ ] { }``): name the override and the quoting that fixes it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415 - hydra stays unloaded until used
    from hydra.errors import HydraException  # noqa: PLC0415 - hydra stays unloaded until used

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_overrides([o])
        except HydraException:
            key, _, value = o.partition("=")
            shell = Path(os.environ.get("SHELL") or "bash").name
            print(f"error: cannot read the override {o!r}: values with spaces, non-ASCII letters or any of "
                  f"( ) , = [ ] {{ }} must be quoted for Hydra, inside the quotes of your shell ({shell}): "
                  f"{quoted_override(key, value, shell)}", file=sys.stderr)
            sys.exit(2)


def quoted_override(key: str, value: str, shell: str = "bash") -> str:
    """``key=value`` as one shell word that reaches Hydra as ``key="value"`` (a quoted string in
    Hydra's grammar: ``"`` escaped, and the backslashes before one): single-quoted for bash, zsh
    and sh (a ``'`` in the value closed and reopened: ``'\\''``); fish's single quotes escape
    ``\\`` and ``'``."""
    # Hydra reads a backslash literally unless it precedes a quote (or ends the string)
    escaped = re.sub(r'(\\+)(?="|$)', lambda m: m.group(1) * 2, value).replace('"', '\\"')
    hydra = f'{key}="{escaped}"'
    if shell == "fish":
        return "'" + hydra.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return shlex.quote(hydra)
