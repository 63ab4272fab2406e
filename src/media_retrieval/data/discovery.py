"""Finding media in folder-per-class datasets (``root/<class>/<clip>``), as UCF/HMDB/KTH ship.

Discovery never stops on bad input: files that are not media, duplicates (same content as an
earlier file) and empty class folders are reported as :class:`Skipped` with a reason; the
caller logs them and writes ``skipped.csv``. Symlinked folders are not followed (no loops).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from media_retrieval.data.video import media_type, probe_video
from media_retrieval.errors import DataError
from media_retrieval.utils.files import is_regular_file, is_utf8_path, printable_path, sha256_file
from media_retrieval.utils.limits import limits

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


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def __post_init__(self) -> None:  # stored in SQLite, CSV and JSON: never a non-UTF-8 surrogate
        object.__setattr__(self, "path", printable_path(self.path))


NOT_UTF8 = (
    "its name is not valid UTF-8 (rename the file; the index and split files store names as UTF-8)"
)


class HashCache:
    """Content identity by a full-file SHA-256, remembered per (path, size, mtime, inode) so an
    unchanged file is never read twice. Two files of one size that differ anywhere get different
    hashes (a size + head/tail hash would call them duplicates).

    With ``path`` the cache persists in a small SQLite file (shared safely by processes);
    without, it lives for this process only."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._mem: dict[tuple, str] = {}
        self._con = None
        if path is not None:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._con = sqlite3.connect(str(path), timeout=60)
                self._con.execute(
                    "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
                    "mtime_ns INTEGER, inode INTEGER, sha256 TEXT)"
                )
                self._con.commit()
            except sqlite3.Error as exc:  # a cache only: hash without it
                log.warning("content-hash cache %s unusable (%s): hashing without it", path, exc)
                self._con = None

    def __call__(self, path: str | Path) -> str:

        st = os.stat(path)
        ident = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if ident in self._mem:
            return self._mem[ident]
        digest = None
        if self._con is not None:
            row = self._con.execute(
                "SELECT size, mtime_ns, inode, sha256 FROM hashes WHERE path = ?", (ident[0],)
            ).fetchone()
            if row is not None and tuple(row[:3]) == ident[1:]:
                digest = row[3]
        if digest is None:
            digest = sha256_file(path)
            if self._con is not None:
                try:
                    self._con.execute(
                        "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)", (*ident, digest)
                    )
                    self._con.commit()
                except sqlite3.Error as exc:
                    log.debug("content-hash cache not updated: %s", exc)
        self._mem[ident] = digest
        return digest

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def segment_key(content_hash: str, chunk: int, start_s: float | None, end_s: float | None) -> str:
    """What a clip is made of, whatever path it has: the file's content, the chunk and its
    span. Keys the feature cache and the index alike."""
    span = "" if start_s is None else f"{start_s:.3f}-{end_s:.3f}"
    return f"{content_hash[:32]}:{chunk}:{span}"


def content_hash(path: str | Path) -> str:
    """Full-file SHA-256 (no cache): what identifies a file's content."""

    return sha256_file(path)


def scan_folder(
    root: str | Path,
    dataset: str,
    kinds: tuple[str, ...] = ("video", "image"),
    dedupe: bool = True,
    hashes: HashCache | None = None,
) -> tuple[list[MediaItem], list[Skipped]]:
    """Media files of the given kinds under ``root/<class>/`` (sorted), and what was skipped.
    ``hashes``: where content hashes for duplicate detection are remembered."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder (dataset {dataset!r})")
    items: list[MediaItem] = []
    skipped: list[Skipped] = []
    seen_hashes: dict[str, str] = {}
    hashes = hashes or HashCache()
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        found = 0
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                f = Path(dirpath) / name
                if name.startswith("."):
                    continue
                kind = media_type(f)
                if kind is None:
                    skipped.append(Skipped(str(f), "not a video or image file (by extension)"))
                    continue
                if not is_utf8_path(f):
                    skipped.append(Skipped(str(f), NOT_UTF8))
                    continue
                if kind not in kinds:
                    continue
                try:
                    if not is_regular_file(f):
                        raise OSError("not a regular file (a FIFO, device, folder or broken link)")
                    digest = hashes(f) if dedupe else None
                except OSError as exc:
                    skipped.append(Skipped(str(f), f"unreadable: {exc}"))
                    continue
                if digest is not None and digest in seen_hashes:
                    skipped.append(Skipped(str(f), f"duplicate of {seen_hashes[digest]}"))
                    continue
                if digest is not None:
                    seen_hashes[digest] = str(f)
                items.append(
                    MediaItem(str(f), dataset, class_dir.name, f"{dataset}/{f.stem}", kind)
                )
                found += 1
        if not found:
            skipped.append(Skipped(str(class_dir), "empty class folder (no usable media)"))
    for s in skipped:
        log.warning("skipping %s: %s", s.path, s.reason)
    return items, skipped


def walk_media(
    root: str | Path, kinds: tuple[str, ...] = ("video", "image")
) -> tuple[list[Path], list[Skipped]]:
    """Every media file under ``root`` at any depth (sorted; hidden files and symlinked folders
    skipped): a user's library has no class folders. Non-media files are reported, not fatal."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"media_dir={str(root)!r} does not exist or is not a folder")
    found: list[Path] = []
    skipped: list[Skipped] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            f = Path(dirpath) / name
            kind = media_type(f)
            if kind is None:
                skipped.append(Skipped(str(f), "not a video or image file (by extension)"))
            elif kind in kinds and not is_utf8_path(f):
                skipped.append(Skipped(str(f), NOT_UTF8))
            elif kind in kinds and not is_regular_file(f):
                skipped.append(
                    Skipped(str(f), "not a regular file (a FIFO, device, folder or broken link)")
                )
            elif kind in kinds:
                found.append(f)
    return found, skipped


def discover(
    root: str | Path, dataset: str, kinds: tuple[str, ...] = ("video",)
) -> list[MediaItem]:
    """Usable media of a dataset; an error when there is none at all."""
    items, _ = scan_folder(root, dataset, kinds)
    if not items:
        raise DataError(
            f"dataset {dataset!r} at {root} has no {'/'.join(kinds)} files in <class>/ folders"
        )
    return items


def chunk_spans(
    duration_s: float, chunk_s: float | None, max_chunks: int | None = None
) -> list[tuple[int, float | None, float | None]]:
    """``(chunk, start_s, end_s)`` of a video cut into ``round(duration / chunk_s)`` equal chunks;
    one whole-file span ``(0, None, None)`` when that is 1, the duration is unknown or
    ``chunk_s`` is None. Shared by dataset chunking and index builds, so both cut alike.
    ``max_chunks``: the video's frame (packet) count: 16 frames spread over a claimed 20 000 s
    make at most 16 chunks, not 2 000 of which most would hold no frame of their own."""

    if chunk_s is None or not math.isfinite(duration_s) or duration_s <= 0:
        return [(0, None, None)]

    n = max(1, round(duration_s / chunk_s))
    if max_chunks is not None:
        n = max(1, min(n, max_chunks))
    cap = limits().max_segments_per_file
    if n > cap:
        raise DataError(
            f"{n} segments of {chunk_s} s is over the limit of {cap} per file: raise "
            "clip.chunk_s (or MEDIA_RETRIEVAL_MAX_SEGMENTS_PER_FILE)"
        )
    if n == 1:
        return [(0, None, None)]
    step = duration_s / n
    return [(i, round(i * step, 3), round((i + 1) * step, 3)) for i in range(n)]


def chunk_items(
    items: list[MediaItem], chunk_s: float | None
) -> tuple[list[MediaItem], list[Skipped]]:
    """Split videos longer than ``chunk_s`` into equal chunks of about ``chunk_s`` seconds
    (``round(duration / chunk_s)`` of them), each an item carrying its video id, chunk index and
    time span. ``None`` keeps whole clips. Videos whose container cannot be probed are skipped."""

    if chunk_s is None:
        return items, []
    out, skipped = [], []
    for it in items:
        if it.media_type != "video":
            out.append(it)
            continue
        try:
            info = probe_video(it.path)
            spans = chunk_spans(info.duration_s, chunk_s, info.packets)
        except DataError as exc:
            skipped.append(Skipped(it.path, str(exc)))
            continue
        if len(spans) == 1:
            out.append(it)
            continue
        out += [replace(it, chunk=c, start_s=start, end_s=end) for c, start, end in spans]
    return out, skipped
