"""Keyed arrays on disk in shards: the one embed-and-store engine under the frame-feature cache
and index builds.

Both compute an array per content key (frame features of a clip, the embedding of a segment)
over minutes or hours, and both must survive a kill: a shard is a ``.npy`` stack plus a
``.keys.json`` list of its keys, each written to a temporary name and renamed, the key list
last. A shard without its key list does not exist, so a killed process never leaves one that
loads half-written, and a rerun computes only the keys not yet on disk. Shards are named by
a hash of their keys, so several processes (DDP ranks) write side by side without numbering
races. The ``.npy`` files are memory-mapped when read: a cache larger than memory still works.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from media_retrieval.errors import MediaRetrievalError
from media_retrieval.utils.files import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

KEYS_SUFFIX = ".keys.json"


class ShardStore:
    """``key -> float32 array`` in ``directory``; arrays of one shard share a shape."""

    def __init__(self, directory: str | Path, durable: bool = False) -> None:
        self.dir = Path(directory)
        self.durable = durable  # fsync each file (index builds); a cache is recomputable
        self._index: dict[str, tuple[str, int]] | None = None
        self._maps: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ reading
    def _shards(self) -> Iterator[tuple[str, list[str]]]:
        """(shard name, its keys) of every finished shard; an unreadable one is removed (its
        keys are computed again)."""
        if not self.dir.is_dir():
            return
        for keys_file in sorted(self.dir.glob(f"shard-*{KEYS_SUFFIX}")):
            name = keys_file.name[: -len(KEYS_SUFFIX)]
            try:
                keys = json.loads(keys_file.read_text())
                shape = np.load(self.dir / f"{name}.npy", mmap_mode="r").shape
                if not isinstance(keys, list) or not shape or shape[0] != len(keys):
                    raise ValueError(f"{len(keys)} keys for {shape[0] if shape else 0} arrays")
            except (OSError, ValueError) as exc:
                log.warning(
                    "removing unreadable shard %s (%s): its items are computed again",
                    keys_file,
                    exc,
                )
                self._remove(name)
                continue
            yield name, [str(k) for k in keys]

    def _remove(self, name: str) -> None:
        (self.dir / f"{name}{KEYS_SUFFIX}").unlink(missing_ok=True)
        (self.dir / f"{name}.npy").unlink(missing_ok=True)

    def index(self) -> dict[str, tuple[str, int]]:
        """key -> (shard name, row); the first shard holding a key wins."""
        if self._index is None:
            self._index = {}
            for name, keys in self._shards():
                for row, key in enumerate(keys):
                    self._index.setdefault(key, (name, row))
        return self._index

    def __contains__(self, key: str) -> bool:
        return key in self.index()

    def __len__(self) -> int:
        return len(self.index())

    def get(self, key: str) -> np.ndarray:
        name, row = self.index()[key]
        if name not in self._maps:
            self._maps[name] = np.load(self.dir / f"{name}.npy", mmap_mode="r")
        return np.asarray(self._maps[name][row])

    def read_all(self) -> dict[str, np.ndarray]:
        """Every stored array, in memory (an index build's finished work)."""
        return {key: np.array(self.get(key)) for key in self.index()}

    def shard_count(self) -> int:
        return len({name for name, _ in self.index().values()})

    def __getstate__(self) -> dict:
        # Memory maps do not pickle (DataLoader workers, ddp_spawn); reopen lazily instead.
        return {**self.__dict__, "_maps": {}}

    # ------------------------------------------------------------------ writing
    def write(self, keys: Sequence[str], arrays: np.ndarray) -> Path:
        """Store ``arrays[i]`` under ``keys[i]`` as one shard; the keys file is renamed in last."""
        keys = [str(k) for k in keys]
        if len(keys) != len(arrays):
            raise ValueError(f"{len(keys)} keys for {len(arrays)} arrays")
        name = "shard-" + hashlib.sha1("\n".join(keys).encode()).hexdigest()[:20]
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with (
                atomic_path(self.dir / f"{name}.npy", durable=self.durable) as tmp,
                open(tmp, "wb") as fh,
            ):
                np.save(fh, np.ascontiguousarray(arrays, dtype=np.float32))
            atomic_write_text(
                self.dir / f"{name}{KEYS_SUFFIX}", json.dumps(keys), durable=self.durable
            )
        except OSError as exc:
            raise MediaRetrievalError(
                f"cannot write to {self.dir} ({exc.strerror or exc}); finished shards are kept: "
                "free space and run the same command again"
            ) from exc
        if self._index is not None:
            for row, key in enumerate(keys):
                self._index.setdefault(key, (name, row))
        return self.dir / f"{name}.npy"

    # ------------------------------------------------------------------ what could not be computed
    def skipped(self) -> dict[str, str]:
        """key -> why it could not be computed (recorded so a rerun does not try again)."""
        path = self.dir / "skipped.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            return {}

    def record_skipped(self, skipped: dict[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.dir / "skipped.json",
            json.dumps(skipped, indent=1, sort_keys=True),
            durable=self.durable,
        )
