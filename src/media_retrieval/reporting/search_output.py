"""How search results are shown: a rich table per query and a contact sheet of thumbnails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from media_retrieval.data.video import load_frames
from media_retrieval.retrieval.media_index import Hit
from media_retrieval.retrieval.rankers import label


def span_text(h: Hit) -> str:
    spans = [s for s in h.spans if s[0] is not None]
    return (
        ", ".join(f"{s:.1f}-{e:.1f}s" for s, e in spans)
        if spans
        else ("image" if h.segment.media_type == "image" else "whole")
    )


def print_hits(query: str, hits: list[Hit], delta: float, ranking: str = "par") -> None:
    # every user-controlled string is escaped: a file named "[link=...]x.mp4" or "[bold" would
    # otherwise be read as rich markup (a traceback, or a spoofed path on screen)
    method = f"PAR δ = {delta}" if ranking == "par" else label(ranking)
    table = Table(
        title=f"{escape(query)}  ({method}: {sum(h.kept for h in hits)} of {len(hits)} kept)"
    )
    for col, just in [
        ("rank", "right"),
        ("path", "left"),
        ("span", "left"),
        ("distance", "right"),
        ("cosine", "right"),
        (label(ranking), "center"),
    ]:
        table.add_column(col, justify=just)
    for h in hits:
        table.add_row(
            str(h.rank),
            escape(h.segment.rel_path),
            span_text(h),
            f"{h.distance:.4f}",
            f"{h.cosine:.4f}",
            "kept" if h.kept else "[dim]dropped[/dim]",
        )
    Console(width=120).print(table)


def thumbnail(path: str, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """Middle frame of a video (span) or the image, as HxWx3 uint8."""
    frames = load_frames(path, 3, min_frames=1, start_s=start_s, end_s=end_s)
    return frames[len(frames) // 2].permute(1, 2, 0).numpy()


def contact_sheet(rows: list[tuple[str, list[Hit]]], path: Path) -> Path:
    """Each row: the query, then its hits (green border = kept by PAR, red = dropped)."""
    from media_retrieval.reporting.figures import gallery_png  # noqa: PLC0415 - reporting.figures (and what it loads) stays unloaded until used

    data = []
    for q, hits in rows:
        results = [
            (
                thumbnail(h.segment.path, h.segment.start_s, h.segment.end_s),
                f"{h.rank}. {Path(h.segment.rel_path).name}\n{span_text(h)} d={h.distance:.2f}",
                h.kept,
            )
            for h in hits
        ]
        data.append((thumbnail(q), Path(q).name, results))
    path.parent.mkdir(parents=True, exist_ok=True)
    return gallery_png(data, path, thumb=128, label_chars=48)
