"""Finding media in folder-per-class datasets (``root/<class>/<clip>``), as UCF/HMDB/KTH ship."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from media_retrieval.data.video import media_type
from media_retrieval.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaItem:
    """One retrievable unit: a whole video, a chunk of one, or an image."""

    path: str
    dataset: str
    label: str
    video_id: str
    media_type: str = "video"
    chunk: int = 0
    start_s: float | None = None
    end_s: float | None = None

    @property
    def key(self) -> str:
        """Identity of the item's content selection (file + chunk): the feature-cache key."""
        return f"{self.path}#{self.chunk}"


def discover(root: str | Path, dataset: str, kinds: tuple[str, ...] = ("video",)) -> list[MediaItem]:
    """List media files of the given kinds under ``root/<class>/``, sorted for determinism."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder (dataset {dataset!r})")
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(class_dir.rglob("*")):
            kind = media_type(f)
            if kind in kinds and f.is_file():
                items.append(MediaItem(str(f), dataset, class_dir.name, f"{dataset}/{f.stem}", kind))
    if not items:
        raise DataError(f"dataset {dataset!r} at {root} has no {'/'.join(kinds)} files in <class>/ folders")
    return items
