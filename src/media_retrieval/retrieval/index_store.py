"""The on-disk media index: what ``src/index.py`` writes and ``src/search.py`` opens.

Layout of ``index_dir``::

    CURRENT                  name of the live generation (replaced atomically, last)
    .lock                    held by the one build that may write here (pid inside)
    .readers/gen-NNNNNN.lock shared locks of open MediaIndex readers: a held generation is not
    deleted
    gen-000002/
      manifest.json          fingerprint, model, preprocessing, counts, and the size and SHA-256
                             of every other file of the generation
      model.json             the model's class (one of ours) and its hyper-parameters
      model.safetensors      its weights (a tensor container: no code, no pickle)
      embeddings.npy         (N, D) float32, memory-mapped on open
      metadata.sqlite        one row per embedding: path, media type, chunk span, size, mtime, hash
      search/                the search backend (FAISS index file, PCA, k-means) if any
    work/<fingerprint>/      embeddings of an unfinished build, one .npz per batch (resume)

Threat model (docs/search.md): an index folder may come from someone else. Opening and
searching it never runs code and never reads outside ``index_dir``, except media under the
media root recorded at build time: ``CURRENT`` may only name a ``gen-NNNNNN`` folder inside
``index_dir``; every file of the generation must match the manifest (size, SHA-256, row
count, vector shape, finite values) before it is used; the model class comes from an
allow-list; SQLite opens read-only with untrusted schema features off; FAISS and PCA files
(parsed by C++) are loaded only from indexes this machine built, and rebuilt from the checked
vectors otherwise. Checksums catch corruption, not an attacker who rewrites them too: the
other rules are what hold against that.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from media_retrieval.errors import ConfigError, DataError, MediaRetrievalError, command
from media_retrieval.retrieval.backends import VectorSearcher, backend_folder_entries, backend_type
from media_retrieval.utils.files import atomic_write_bytes, fsync_dir, printable_path, sha256_file
from media_retrieval.utils.limits import limits

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
GEN_NAME = re.compile(r"gen-\d{6}")
MAX_JSON_BYTES = 16 << 20
_HEX = re.compile(r"[0-9a-f]{16,128}")
#: the only entries an index folder holds at its top level besides gen-NNNNNN folders; none may
#: be a link (a planted ``.lock -> ~/.bashrc`` would be truncated by the next build)
OWN_ENTRIES = ("CURRENT", ".lock", ".readers", "work")
#: files read into memory and checked there, so a change on disk after open cannot reach a search
IN_MEMORY = ("embeddings.npy", "model.safetensors")
#: the schema this project writes (a foreign file's views and triggers are refused, never run)
SCHEMA = {
    ("table", "segments"),
    ("table", "skipped"),
    ("index", "segments_path"),
}
#: SQLite virtual-machine steps one query may take before it is stopped (a planted recursive
#: view or a huge table cannot hang an open)
SQLITE_STEPS = 50_000_000


@dataclass(frozen=True)
class Segment:
    """One indexed embedding: a whole file, or a time span (chunk) of a video."""

    key: str  # content identity: content hash + chunk span (stable across renames)
    path: str  # absolute path at indexing time (= media root / rel_path)
    rel_path: str  # path relative to the media root (what users see)
    media_type: str  # video | image
    chunk: int
    start_s: float | None
    end_s: float | None
    size: int
    mtime_ns: int
    content_hash: str


def preprocess_key(clip_key: dict, precision: str = "fp32") -> dict:
    """What the fingerprint holds of the preprocessing: the clip spec's key, plus the
    inference precision when it is not fp32 (bf16 changes the embeddings; fp32 indexes keep
    the fingerprints they had)."""
    return clip_key if precision == "fp32" else {**clip_key, "precision": precision}


def fingerprint(model: torch.nn.Module, model_spec: dict, preprocess: dict) -> str:
    """What decides the embeddings: the weights, the model's definition and the preprocessing.
    Two indexes (or an index and a query) are comparable only when these agree."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"model": model_spec.get("class"), "preprocess": preprocess}, sort_keys=True
        ).encode()
    )
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


# ---------------------------------------------------------------------- trust store
def _trust_store() -> Path:
    """Manifests of the generations this machine built (their SHA-256), one per line."""
    env = os.environ.get("MEDIA_RETRIEVAL_TRUST_STORE")
    return Path(env) if env else Path.home() / ".cache" / "media-retrieval" / "trusted-indexes.txt"


def _mark_trusted(manifest_sha: str) -> None:
    path = _trust_store()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(manifest_sha + "\n")
    except OSError as exc:  # only costs a rebuild of the ANN structure at open
        log.warning("cannot record this index as built here (%s): it will open as untrusted", exc)


def _is_trusted(manifest_sha: str) -> bool:
    try:
        return manifest_sha in _trust_store().read_text().split()
    except OSError:
        return False


# ---------------------------------------------------------------------- checks
def corrupt(gen: Path, what: str) -> DataError:
    return DataError(
        f"index {gen.parent} ({gen.name}): {what}; the index is corrupt or was modified: "
        f"rebuild it ({command('index')} media_dir=... index_dir={gen.parent} index.rebuild=true)"
    )


def _read_json(gen: Path, name: str) -> dict:
    path = gen / name
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise corrupt(gen, f"{name} is not a regular file")
        if st.st_size > MAX_JSON_BYTES:
            raise corrupt(gen, f"{name} is larger than {MAX_JSON_BYTES >> 20} MiB")
        data = json.loads(_read_regular(path, MAX_JSON_BYTES).decode("utf-8"))
    except FileNotFoundError as exc:
        raise corrupt(gen, f"{name} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(gen, f"{name} cannot be read ({exc})") from exc
    except RecursionError as exc:
        raise corrupt(gen, f"{name} is nested too deeply") from exc
    if not isinstance(data, dict):
        raise corrupt(gen, f"{name} is not a JSON object")
    return data


def _read_regular(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes, opened without following a link and without blocking (a FIFO
    planted under a listed name is refused, not waited on), at most ``max_bytes``."""
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes")
    return data


def _size_bound(rel: str, count: int, dim: int) -> int:
    """The largest size a generation's file can have for ``count`` vectors of ``dim``: anything
    larger (a 4 GiB sparse file listed in a foreign manifest) is refused before it is hashed."""
    vectors = count * dim * 4
    if rel == "embeddings.npy":
        return vectors + 4096  # .npy header
    if rel == "model.safetensors":
        return limits().max_model_values * 8 + (16 << 20)  # float64 at most, plus the header
    if rel.endswith(".json"):
        return MAX_JSON_BYTES
    if rel == "metadata.sqlite":
        return min(limits().max_index_file_bytes, (64 << 20) + count * 16384)
    return min(
        limits().max_index_file_bytes, 2 * vectors + count * 1024 + (64 << 20)
    )  # search/: FAISS, PCA


def _is_num(v, allow_none: bool = False) -> bool:
    if v is None:
        return allow_none
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_segment(gen: Path, row: tuple, media_root: PurePosixPath) -> Segment:
    try:
        s = Segment(*row)
    except TypeError as exc:
        raise corrupt(gen, f"metadata.sqlite row has {len(row)} columns") from exc
    ok = (
        isinstance(s.key, str)
        and isinstance(s.path, str)
        and isinstance(s.rel_path, str)
        and s.media_type in ("video", "image")
        and isinstance(s.chunk, int)
        and s.chunk >= 0
        and _is_num(s.start_s, True)
        and _is_num(s.end_s, True)
        and isinstance(s.size, int)
        and isinstance(s.mtime_ns, int)
        and isinstance(s.content_hash, str)
        and _HEX.fullmatch(s.content_hash)
    )
    if not ok:
        raise corrupt(gen, f"metadata.sqlite has a malformed row ({str(row)[:120]})")
    rel = PurePosixPath(s.rel_path)
    if (
        not s.rel_path
        or rel.is_absolute()
        or ".." in rel.parts
        or "\x00" in s.rel_path
        or s.path != str(media_root / rel)
    ):
        raise corrupt(
            gen, f"segment path {s.path[:120]!r} is outside the media root {str(media_root)!r}"
        )
    return s


def _check_files(gen: Path, manifest: dict, count: int, dim: int) -> dict[str, bytes]:
    """Every file of the generation is listed in the manifest with its size and SHA-256, and
    nothing else is there: no links, FIFOs, devices or sockets (checked by ``lstat`` before
    anything is opened), no file larger than its kind can be (:func:`_size_bound`). The files
    of :data:`IN_MEMORY` are read once and verified in memory; their bytes are returned."""
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise corrupt(gen, "manifest.json lists no files")
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(gen, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                raise corrupt(gen, f"{p.relative_to(gen)} is a symbolic link")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise corrupt(
                    gen, f"{p.relative_to(gen)} is not a regular file (a FIFO, device or socket)"
                )
        for name in filenames:
            found.add((Path(dirpath) / name).relative_to(gen).as_posix())
    found.discard("manifest.json")
    if found != set(listed):
        extra, missing = sorted(found - set(listed)), sorted(set(listed) - found)
        raise corrupt(
            gen, f"files differ from the manifest (unexpected {extra[:3]}, missing {missing[:3]})"
        )
    verified: dict[str, bytes] = {}
    for rel, meta in sorted(listed.items()):
        path = gen / rel
        size = os.lstat(path).st_size
        if not isinstance(meta, dict) or size != meta.get("size"):
            raise corrupt(gen, f"{rel} has the wrong size")
        if size > _size_bound(rel, count, dim):
            raise corrupt(
                gen, f"{rel} is {size} bytes, more than an index of {count} x {dim} can hold"
            )
        if rel in IN_MEMORY:
            try:
                data = _read_regular(path, size)
            except OSError as exc:
                raise corrupt(gen, f"{rel} cannot be read ({exc.strerror or exc})") from exc
            digest = hashlib.sha256(data).hexdigest()
            verified[rel] = data
        else:
            digest = sha256_file(path)
        if digest != meta.get("sha256"):
            raise corrupt(gen, f"{rel} does not match its SHA-256 in the manifest")
    return verified


# ---------------------------------------------------------------------- a generation
@dataclass
class Generation:
    """One checked generation of an index: safe to hand to the search path."""

    path: Path
    manifest: dict
    segments: list[Segment]
    vectors: np.ndarray  # in memory, verified: a file changed after open cannot reach a search
    trusted: bool
    weights: bytes | None = None  # model.safetensors as verified at open (dropped once loaded)

    @property
    def media_root(self) -> Path:
        return Path(self.manifest["media_dir"])

    def load_model(self) -> torch.nn.Module:
        """The model that built the index, from its own files: an allow-listed class with checked
        arguments and weights from a safetensors file (no pickle anywhere)."""
        from safetensors import SafetensorError  # noqa: PLC0415 - safetensors stays unloaded until used
        from safetensors.torch import load  # noqa: PLC0415 - safetensors stays unloaded until used

        from media_retrieval.models.registry import build_from_spec  # noqa: PLC0415 - models.registry (and what it loads) stays unloaded until used

        spec = self.model_spec
        if self.weights is None:
            raise corrupt(self.path, "model.safetensors was already loaded from this generation")
        try:
            state = load(self.weights)
            self.weights = None
        except (SafetensorError, OSError, ValueError) as exc:
            raise corrupt(self.path, f"model.safetensors cannot be read ({exc})") from exc
        try:
            return build_from_spec(spec.get("class"), spec.get("hparams") or {}, state)
        except DataError as exc:
            raise corrupt(self.path, f"model.json: {exc}") from exc

    @cached_property
    def model_spec(self) -> dict:
        """``model.json``: the model's class and hyper-parameters (data, checked when built)."""
        return _read_json(self.path, "model.json")

    def skipped(self) -> list[tuple[str, str]]:
        return _query(self.path, "SELECT path, reason FROM skipped")

    def searcher(self, overrides: dict | None = None):
        """The search backend: loaded from its files when this machine built the index,
        otherwise rebuilt from the checked vectors (FAISS/PCA files are parsed by C++)."""
        folder = self.path / "search"
        meta = _read_json(self.path, "search/backend.json")
        kind = backend_type(meta.get("backend"))
        meta = kind.checked_meta(self.path, meta, overrides, self.trusted)
        if self.trusted or not kind.parses_local_files:
            try:
                return VectorSearcher.load(folder, self.vectors, overrides, meta=meta)
            except (
                RuntimeError,
                ValueError,
                OSError,
                KeyError,
                TypeError,
            ) as exc:  # FAISS / NumPy parse errors
                raise corrupt(
                    self.path, f"search/ cannot be loaded ({str(exc).splitlines()[0][:160]})"
                ) from exc
        log.info(
            "index %s was not built on this machine: rebuilding its %s search structure from the "
            "checked vectors (index.trusted=true skips this for an index you trust)",
            self.path.parent,
            meta.get("backend"),
        )
        return VectorSearcher.rebuild(self.vectors, meta, overrides)


def _expected_schema(con: sqlite3.Connection, gen: Path) -> None:
    """The file holds exactly the tables and index this project writes: a planted view named
    ``segments`` (which could recurse for ever) or a trigger is refused before any query."""
    found = {(t, n) for t, n in con.execute("SELECT type, name FROM sqlite_master")}
    if found != SCHEMA:
        raise corrupt(
            gen, f"metadata.sqlite has an unexpected schema ({sorted(found ^ SCHEMA)[:3]})"
        )


def _query(gen: Path, sql: str) -> list[tuple]:
    """Rows of a query on a generation's metadata: read-only and immutable (nothing is written
    beside the file, no journal is replayed), the schema checked first, work bounded."""
    path = gen / "metadata.sqlite"
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise corrupt(gen, "metadata.sqlite is not a regular file")
        con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
    except (sqlite3.Error, OSError) as exc:
        raise corrupt(gen, f"metadata.sqlite cannot be opened ({exc})") from exc
    steps = [0]

    def budget() -> int:  # called every 1000 VM steps; non-zero stops the query
        steps[0] += 1000
        return int(steps[0] > SQLITE_STEPS)

    try:
        con.execute("PRAGMA trusted_schema=OFF")
        con.execute("PRAGMA query_only=ON")
        con.set_progress_handler(budget, 1000)
        _expected_schema(con, gen)
        return con.execute(sql).fetchall()
    except sqlite3.Error as exc:
        raise corrupt(gen, f"metadata.sqlite cannot be read ({str(exc)[:160]})") from exc
    finally:
        con.close()


def segment_ids(gen: Path) -> list[tuple]:
    """``(key, rel_path, start_s, end_s)`` of a generation's segments in row order: what an
    external search engine (Milvus) identifies segments by."""
    return _query(gen, "SELECT key, rel_path, start_s, end_s FROM segments ORDER BY row")


def read_manifest(gen: Path) -> dict:
    """A generation's manifest, read size-bounded as every index JSON (no files checked)."""
    return _read_json(gen, "manifest.json")


class _Lease:
    """A held reader lease (see :meth:`IndexStore.reader_lease`): an open descriptor."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _open_lock(name: str, dir_fd: int | None = None, path: Path | None = None) -> int:
    """A lock file opened for writing without ever following a link (``O_NOFOLLOW``), created
    if absent, refused unless it is a regular file: a planted ``.lock`` or ``.readers/*.lock``
    link cannot make us truncate or write a file elsewhere. With ``dir_fd`` the name is
    resolved inside that already-opened folder (no path walk to race with)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(name if dir_fd is not None else str(path), flags, 0o644, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{name} is not a regular file")
    return fd


class IndexStore:
    """Reads and writes generations of an index folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"index_dir={str(root)!r} is a file, not a folder")

    def _readers_dir(self, create: bool) -> int:
        """``.readers`` opened as a folder that is not a link (``O_DIRECTORY | O_NOFOLLOW``):
        lease files are then opened relative to this descriptor."""
        path = self.root / ".readers"
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o755)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def refuse_links(self) -> None:
        """An index folder holds no links among its own entries; one there (planted by whoever
        handed us the folder) stops a build before anything is written through it."""
        for name in OWN_ENTRIES + backend_folder_entries():
            p = self.root / name
            if p.is_symlink():
                raise DataError(
                    f"index {self.root}: {name} is a symbolic link; an index folder holds none "
                    f"(remove {p} and run again)"
                )

    # ------------------------------------------------------------------ reading
    def current_name(self, required: bool = False) -> str | None:
        """The live generation's name (``gen-NNNNNN``), checked; None when there is no index."""
        pointer = self.root / "CURRENT"
        if not pointer.exists() and not pointer.is_symlink():
            if required:
                self.require()
            return None
        try:
            name = _read_regular(pointer, 64).decode("utf-8", errors="replace").strip()
        except OSError:
            raise DataError(
                f"index {self.root}: CURRENT is not a small regular file; rebuild the index"
            ) from None
        if not GEN_NAME.fullmatch(name):
            raise DataError(
                f"index {self.root}: CURRENT names {name[:80]!r}, not a generation inside "
                "index_dir; rebuild the index"
            )
        return name

    def current(self) -> Path | None:
        """The live generation's folder; None when there is no index yet. ``CURRENT`` may only
        name a ``gen-NNNNNN`` folder directly inside ``index_dir`` (no links, no ``..``)."""
        name = self.current_name()
        if name is None:
            return None
        gen = self.root / name
        if gen.is_symlink() or not gen.is_dir() or gen.resolve().parent != self.root.resolve():
            raise DataError(
                f"index {self.root}: {name} is missing or not a folder inside index_dir; rebuild "
                "the index"
            )
        return gen

    def require(self) -> Path:
        gen = self.current()
        if gen is None:
            raise ConfigError(
                f"index_dir={str(self.root)!r} holds no index: build one with "
                f"{command('index')} media_dir=... index_dir={self.root}"
            )
        return gen

    def open(self, trusted: bool | str = "auto") -> Generation:
        """The live generation, checked against its manifest (see the module docstring).
        ``trusted``: ``auto`` = only if this machine built it; True/False force it."""
        if trusted not in ("auto", True, False):
            raise ConfigError(f"index.trusted={trusted!r}; valid: auto, true, false")
        gen = self.require()
        manifest = _read_json(gen, "manifest.json")
        if manifest.get("format") != FORMAT_VERSION:
            raise DataError(
                f"index {self.root}: format {manifest.get('format')!r}, this version reads "
                f"{FORMAT_VERSION}: rebuild it ({command('index')} media_dir=... "
                f"index_dir={self.root} "
                "index.rebuild=true)"
            )
        count, dim, media = manifest.get("count"), manifest.get("dim"), manifest.get("media_dir")
        if not (
            isinstance(count, int)
            and count > 0
            and isinstance(dim, int)
            and dim > 0
            and isinstance(media, str)
            and Path(media).is_absolute()
        ):
            raise corrupt(gen, "manifest.json has no valid count, dim or media_dir")
        lim = limits()
        if count > lim.max_index_rows or dim > lim.max_embedding_dim:
            raise corrupt(
                gen,
                f"manifest.json claims {count} x {dim} vectors, over the limits "
                f"({lim.max_index_rows} rows, {lim.max_embedding_dim} dims; "
                "MEDIA_RETRIEVAL_MAX_INDEX_ROWS "
                "and MEDIA_RETRIEVAL_MAX_EMBEDDING_DIM raise them)",
            )
        verified = _check_files(gen, manifest, count, dim)
        if set(IN_MEMORY) - set(verified):
            raise corrupt(
                gen, f"the manifest does not list {sorted(set(IN_MEMORY) - set(verified))}"
            )
        try:
            vectors = np.load(io.BytesIO(verified["embeddings.npy"]), allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise corrupt(gen, f"embeddings.npy cannot be read ({exc})") from exc
        if vectors.dtype != np.float32 or vectors.shape != (count, dim):
            raise corrupt(
                gen,
                f"embeddings.npy is {vectors.dtype} {vectors.shape}, the manifest says float32 "
                f"({count}, {dim})",
            )
        for s in range(0, count, 65536):
            if not np.isfinite(vectors[s : s + 65536]).all():
                raise corrupt(gen, "embeddings.npy holds non-finite values")
        names = [f.name for f in fields(Segment)]
        rows = _query(gen, f"SELECT row, {', '.join(names)} FROM segments ORDER BY row")
        if [r[0] for r in rows] != list(range(count)):
            raise corrupt(gen, f"metadata.sqlite has {len(rows)} rows, the manifest says {count}")
        root = PurePosixPath(media)
        segments = [_check_segment(gen, r[1:], root) for r in rows]
        if trusted == "auto":
            trusted = _is_trusted(sha256_file(gen / "manifest.json"))
        return Generation(
            gen, manifest, segments, vectors, bool(trusted), verified["model.safetensors"]
        )

    def manifest(self) -> dict | None:
        return self.open().manifest if self.current() is not None else None

    def segments(self) -> list[Segment]:
        return self.open().segments

    def embeddings(self) -> np.ndarray:
        return self.open().vectors

    def skipped(self) -> list[tuple[str, str]]:
        return self.open().skipped()

    # ------------------------------------------------------------------ reader leases
    def reader_lease(self, name: str) -> _Lease:
        """A shared lock on generation ``name``: while held, builds leave that generation on disk.
        Released by :meth:`_Lease.close` or when the process ends. A read-only ``index_dir``
        gets no lease (nothing can be removed from it either)."""
        if not GEN_NAME.fullmatch(name):
            return _Lease(None)
        fd = None
        try:
            dfd = self._readers_dir(create=True)
            try:
                fd = _open_lock(f"{name}.lock", dir_fd=dfd)
            finally:
                os.close(dfd)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as exc:  # a read-only folder, or a planted link: no lease, nothing written
            if fd is not None:
                os.close(fd)
            log.debug("no reader lease on %s in %s (%s)", name, self.root, exc)
            return _Lease(None)
        return _Lease(fd)

    def _remove_unread(self, gen: Path) -> None:
        """Delete an old generation unless a reader still holds it (the next build retries).
        A link or file planted under a generation's name is removed as itself, never followed."""
        if gen.is_symlink() or not gen.is_dir():
            gen.unlink(missing_ok=True)
            return
        try:
            dfd = self._readers_dir(create=False)
        except OSError:
            shutil.rmtree(gen, ignore_errors=True)
            return
        try:
            try:
                fd = os.open(
                    f"{gen.name}.lock",
                    os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=dfd,
                )
            except FileNotFoundError:
                shutil.rmtree(gen, ignore_errors=True)
                return
            except (
                OSError
            ):  # a link or something else planted there: the generation stays, the entry goes
                with contextlib.suppress(OSError):
                    os.unlink(f"{gen.name}.lock", dir_fd=dfd)
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                log.info("%s is still open for reading: kept until a later build", gen.name)
                os.close(fd)
                return
            shutil.rmtree(gen, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.unlink(f"{gen.name}.lock", dir_fd=dfd)
            os.close(fd)
        finally:
            os.close(dfd)

    # ------------------------------------------------------------------ writing
    def work_dir(self, fp: str) -> Path:
        return self.root / "work" / fp

    @contextlib.contextmanager
    def writer_lock(self, wait_s: float = 0.0) -> Iterator[None]:
        """Exclusive right to build into this folder (readers never need it). A second build
        waits up to ``wait_s`` seconds, then fails with one line naming the holder's pid."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.refuse_links()
        path = self.root / ".lock"
        try:
            fd = _open_lock(".lock", path=path)
        except OSError as exc:
            raise DataError(
                f"index {self.root}: .lock cannot be opened safely ({exc.strerror or exc}); remove "
                f"{path} if it is a link or not a regular file"
            ) from exc
        fh = os.fdopen(fd, "r+")
        try:
            deadline = time.monotonic() + max(wait_s, 0.0)
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        fh.seek(0)
                        holder = fh.read().strip() or "unknown"
                        raise ConfigError(
                            f"index_dir={str(self.root)!r} is being built by another process "
                            f"(pid {holder}); wait for it to finish, or give "
                            "index.lock_wait_s=<seconds>"
                        ) from None
                    time.sleep(0.2)
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fh.close()  # releases the lock

    def write_generation(
        self,
        segments: list[Segment],
        vectors: np.ndarray,
        manifest: dict,
        model: torch.nn.Module,
        model_spec: dict,
        searcher=None,
    ) -> Path:
        """Write a complete generation, then switch ``CURRENT`` to it; older ones are removed.
        Call with :meth:`writer_lock` held."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.refuse_links()
        live = self.current_name()
        number = (
            int(live[len("gen-") :]) + 1 if live else 1
        )  # from CURRENT: planted gen-* folders count for nothing
        if number > 999_999:
            raise DataError(
                f"index {self.root}: generation numbers are used up; rebuild into a new index_dir"
            )
        gen = self.root / f"gen-{number:06d}"
        if (
            gen.exists() or gen.is_symlink()
        ):  # not live (CURRENT names another): junk from a crash or a plant
            self._remove_unread(gen)
            if gen.exists() or gen.is_symlink():
                raise DataError(
                    f"index {self.root}: {gen.name} is held by a reader but not live; close it and "
                    "run again"
                )
        tmp = self.root / f".{gen.name}.partial"
        for stale in self.root.glob(".gen-*.partial"):  # left by a crash: never live
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.mkdir()
            self._write_files(tmp, segments, vectors, manifest, model, model_spec, searcher)
            if searcher is not None:  # an external engine's copy, complete before CURRENT moves
                searcher.publish(self.root, gen.name, segments, manifest)
            os.replace(tmp, gen)
            atomic_write_bytes(self.root / "CURRENT", gen.name.encode())
        except (
            BaseException
        ) as exc:  # full disk etc.: nothing half-written stays; the live index is untouched
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                now_live = self.current_name()
            except DataError:
                now_live = None
            if gen.exists() and now_live != gen.name:
                shutil.rmtree(gen, ignore_errors=True)
            # safetensors reports a full disk as its own SafetensorError (no OSError to catch)
            if isinstance(exc, (OSError, RuntimeError)) or type(exc).__name__ == "SafetensorError":
                reason = (
                    exc.strerror
                    if isinstance(exc, OSError) and exc.strerror
                    else str(exc).splitlines()[0][:160]
                )
                raise MediaRetrievalError(
                    f"cannot write the index to {self.root} ({reason}); the live index is "
                    "unchanged and the embedded batches are kept: free space and run again"
                ) from exc
            raise
        _mark_trusted(sha256_file(gen / "manifest.json"))
        for old in self.root.glob(
            "gen-*"
        ):  # the one replaced, and any junk under a generation's name
            if old != gen:
                self._remove_unread(old)
        if searcher is not None:
            searcher.activate(self.root, gen.name)
        return gen

    def _write_files(
        self,
        tmp: Path,
        segments: list[Segment],
        vectors: np.ndarray,
        manifest: dict,
        model: torch.nn.Module,
        model_spec: dict,
        searcher,
    ) -> None:
        from safetensors.torch import save_file  # noqa: PLC0415 - safetensors stays unloaded until used

        np.save(tmp / "embeddings.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        con = sqlite3.connect(tmp / "metadata.sqlite")
        try:
            cols = [f.name for f in fields(Segment)]
            con.execute(f"CREATE TABLE segments (row INTEGER PRIMARY KEY, {', '.join(cols)})")
            con.executemany(
                f"INSERT INTO segments VALUES (?, {', '.join('?' * len(cols))})",
                [(i, *asdict(s).values()) for i, s in enumerate(segments)],
            )
            con.execute("CREATE INDEX segments_path ON segments(path)")
            con.execute("CREATE TABLE skipped (path TEXT, reason TEXT)")
            con.executemany(
                "INSERT INTO skipped VALUES (?, ?)",
                [
                    (printable_path(p), printable_path(r))
                    for p, r in manifest.get("skipped_files", [])
                ],
            )
            con.commit()
        finally:
            con.close()
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "model.json").write_text(json.dumps(model_spec, indent=1, default=str))
        if searcher is not None:
            searcher.save(tmp / "search")
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
                files[f.relative_to(tmp).as_posix()] = {
                    "size": f.stat().st_size,
                    "sha256": sha256_file(f),
                }
        manifest = {
            **manifest,
            "format": FORMAT_VERSION,
            "count": len(segments),
            "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
            "files": files,
        }
        manifest.pop("skipped_files", None)
        with open(tmp / "manifest.json", "w") as fh:
            fh.write(json.dumps(manifest, indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(tmp)
