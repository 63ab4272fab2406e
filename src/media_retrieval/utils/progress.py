"""Progress of long work that a person can follow in a terminal and in a log file alike.

``rich``'s bar redraws one line, which a terminal shows and a redirected stream (``> run.log``,
CI, ``nohup``) never does: a 30-minute feature build then prints nothing at all. So when the
output is not a terminal, the same progress goes out as plain log lines, one every
``every_s`` seconds or 5 % of the work, each with the items done, the rate and the time left.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class LogProgress:
    """Plain-line progress: :meth:`advance` logs when ``every_s`` passed or 5 % more is done."""

    def __init__(self, label: str, total: int, every_s: float = 10.0) -> None:
        self.label, self.total, self.every_s = label, max(int(total), 1), every_s
        self.done, self.start = 0, time.monotonic()
        self._last_t, self._last_done = self.start, 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        step = max(self.total // 20, 1)
        if (
            self.done >= self.total
            or now - self._last_t >= self.every_s
            or self.done - self._last_done >= step
        ):
            self._last_t, self._last_done = now, self.done
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = "?" if left != left else f"{int(left // 60)} min {int(left % 60):02d} s"
        share = 100 * self.done / self.total
        return f"{self.label}: {self.done}/{self.total} ({share:.0f} %, {rate:.2f}/s, {eta} left)"


@contextmanager
def progress(label: str, total: int, every_s: float = 10.0) -> Iterator:
    """A callable ``advance(n)``: rich's bar on a terminal, :class:`LogProgress` lines otherwise."""
    if sys.stderr.isatty():
        from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn  # noqa: PLC0415 - rich stays unloaded until used

        columns = (
            *Progress.get_default_columns()[:-1],
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n=1: bar.advance(task, n)
    else:
        lines = LogProgress(label, total, every_s)
        yield lines.advance
