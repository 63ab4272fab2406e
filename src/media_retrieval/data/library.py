"""A user's media library as model input: files (or time spans of videos) -> clips.

Index builds and queries make clips with :func:`media_retrieval.clips.load_clip` and the
model's :class:`~media_retrieval.clips.ClipSpec`, so a query is embedded exactly as the
indexed media were, and both as the model's training clips.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.data import Dataset, default_collate

from media_retrieval.data.clips import ClipSpec, clip_transform, load_clip
from media_retrieval.data.discovery import Skipped, walk_media
from media_retrieval.errors import ConfigError, DataError
from media_retrieval.utils.files import is_regular_file

log = logging.getLogger(__name__)


def skip_failed_collate(batch: list[dict | None]) -> dict | None:
    """Default collation without the samples that failed to load (None); None if all failed,
    which the models' steps treat as "skip this batch"."""

    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None


class SegmentDataset(Dataset):
    """Items are (path, start_s, end_s); a file that fails to decode is logged and yields None
    (dropped by :func:`skip_failed_collate`)."""

    def __init__(self, spans: list[tuple[str, float | None, float | None]], spec: ClipSpec) -> None:
        self.spans, self.spec, self.transform = spans, spec, clip_transform(spec)

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> dict | None:
        path, start, end = self.spans[i]
        try:
            clip = load_clip(path, self.spec, start, end, transform=self.transform)
        except (DataError, OSError, RuntimeError, ValueError) as exc:
            log.warning("skipping %s: %s", path, exc)
            return None
        return {"sample_id": i, "clip": clip}


def query_paths(query: str | Path) -> tuple[list[str], list[Skipped]]:
    """The files a query names: the file itself, or every video and image in a folder (and,
    listed apart, what in that folder cannot be a query)."""

    qpath = Path(query)
    if qpath.is_dir():
        files, not_media = walk_media(qpath)
        if not files:
            raise DataError(f"query folder {qpath} holds no video or image files")
        for sk in not_media:
            log.warning("skipping query %s: %s", sk.path, sk.reason)
        return [str(f) for f in files], not_media
    if is_regular_file(qpath):
        return [str(qpath)], []
    if qpath.exists():
        raise ConfigError(
            f"query={str(query)!r} is not a regular file or folder (a FIFO or device?)"
        )
    raise ConfigError(f"query={str(query)!r}: no such file or folder")
