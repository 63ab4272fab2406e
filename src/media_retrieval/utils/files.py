"""File primitives every writer and reader here shares: atomic replacement, streamed hashing,
and the check that a path is a regular file before anything opens it (a FIFO named
``clip.mp4`` would block a decoder forever; a device file would stream without end)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (following symlinks); False for FIFOs, sockets, devices,
    folders, broken links and anything that cannot be stat'ed."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a whole file, read in 1 MiB blocks (bounded memory on any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (a crash right after it keeps the new name)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, rename: readers see the old content or
    the new, never a prefix; on failure (full disk) the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
