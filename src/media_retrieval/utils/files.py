"""File primitives every writer and reader here shares: atomic replacement, streamed hashing,
and the check that a path is a regular file before anything opens it (a FIFO named
``clip.mp4`` would block a decoder forever; a device file would stream without end)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (following symlinks); False for FIFOs, sockets, devices,
    folders, broken links and anything that cannot be stat'ed."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def printable_path(path: str | Path) -> str:
    """A path as text that can be stored and shown anywhere: bytes that are not UTF-8 (a name
    like ``caf\\xe9.png`` from another system) become ``\\xe9`` escapes instead of surrogates
    that fail when written to SQLite, JSON or a terminal."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def is_utf8_path(path: str | Path) -> bool:
    """Whether the path's name round-trips through UTF-8 (what every record we write holds)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        tmp.unlink(
            missing_ok=True
        )  # a stale one (or a planted link) goes: "x" (O_EXCL) never writes through one
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that add one do not) for any
    writer; on success it is fsynced (``durable``) and renamed onto ``path``, on failure removed.
    Readers see the old file or the new one, never a prefix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text)


_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp(\.[^.]*)?")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write_bytes` and :func:`atomic_path` left in
    ``folder`` when their process was killed mid-write (``.last.ckpt.<pid>.tmp``): those of
    processes no longer running. Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.fullmatch(p.name)
        if m is None or int(m.group("pid")) == os.getpid():
            continue
        try:
            os.kill(int(m.group("pid")), 0)
            continue  # its writer is still running
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        with contextlib.suppress(OSError):
            if p.is_symlink() or p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def point_latest(link: str | Path, target: str | Path) -> None:
    """Make ``link`` (e.g. ``logs/eval/latest``) a symbolic link to ``target``, replaced atomically,
    so a config can name "the last run's file" without a placeholder for the user to fill in. A
    ``link`` that exists and is not a link is left alone."""
    link, target = Path(link), Path(target)
    if link.exists() and not link.is_symlink():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
