"""Each log line once, and none that says nothing about the run: filters installed on the
logging Hydra sets up for every entry point."""

from __future__ import annotations

import logging
import warnings


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


def quiet_lightning() -> None:
    """Lightning's lines that say nothing about the run: :class:`_NoTips`, and the deprecation
    warning Lightning raises on its own use of a torch API (nothing a user can act on). The
    entry points and the Python API's index builds both install it."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in tips.filters):
        tips.addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def each_line_once() -> None:
    """:func:`quiet_lightning`, and :class:`_LightningOnce` on the root's console handlers
    (Hydra's ``job_logging``)."""
    quiet_lightning()
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(
            isinstance(f, _LightningOnce) for f in handler.filters
        ):
            handler.addFilter(_LightningOnce())
