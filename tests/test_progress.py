"""Long work reports progress as plain log lines when the output is not a terminal."""

from __future__ import annotations

import logging

from media_retrieval.utils.progress import LogProgress, progress


def test_piped_progress_is_log_lines_with_count_rate_and_time_left(caplog):
    caplog.set_level(logging.INFO, logger="media_retrieval.utils.progress")
    with progress("clip features", 40, every_s=3600) as advance:  # pytest's stderr is no terminal
        for _ in range(40):
            advance(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 20  # every 5 % (2 items), not per item
    assert lines[0].startswith("clip features: 2/40 (5 %, ") and lines[-1].startswith(
        "clip features: 40/40 (100 %"
    )
    assert all("/s, " in line and line.endswith(" left)") for line in lines)


def test_a_slow_step_is_reported_after_every_s_seconds(caplog):
    caplog.set_level(logging.INFO, logger="media_retrieval.utils.progress")
    p = LogProgress("index", 1000, every_s=0.0)
    p.advance(1)
    assert caplog.records[-1].getMessage().startswith("index: 1/1000 (0 %")
