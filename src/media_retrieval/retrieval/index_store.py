"""The on-disk media index: what ``src/index.py`` writes and ``src/search.py`` opens.

Layout of ``index_dir``::

    CURRENT                  name of the live generation (replaced atomically, last)
    gen-000002/
      manifest.json          fingerprint, model, preprocessing, counts, build stats
      model.json, model.pt   the model's class + hparams and its state dict (weights only)
      embeddings.npy         (N, D) float32, memory-mapped on open
      metadata.sqlite        one row per embedding: path, media type, chunk span, size, mtime, hash
      search/                the search backend (FAISS index file, PCA, k-means) if any
    work/<fingerprint>/      embeddings of an unfinished build, one .npz per batch (resume)

A build writes a whole new generation folder and only then points ``CURRENT`` at it, so a
crash at any moment leaves either the old index or the new one, never a half-written one.
Nothing here is pickled: arrays are ``.npy``/``.npz`` read with ``allow_pickle=False``,
weights load with ``torch.load(weights_only=True)``, metadata is SQLite.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from media_retrieval.errors import ConfigError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Segment:
    """One indexed embedding: a whole file, or a time span (chunk) of a video."""

    key: str            # content identity: content hash + chunk span (stable across renames)
    path: str           # absolute path at indexing time
    rel_path: str       # path relative to the media root (what users see)
    media_type: str     # video | image
    chunk: int
    start_s: float | None
    end_s: float | None
    size: int
    mtime_ns: int
    content_hash: str


def segment_key(content_hash: str, chunk: int, start_s: float | None, end_s: float | None) -> str:
    span = "" if start_s is None else f"{start_s:.3f}-{end_s:.3f}"
    return f"{content_hash[:32]}:{chunk}:{span}"


def fingerprint(model: torch.nn.Module, model_spec: dict, preprocess: dict) -> str:
    """What decides the embeddings: the weights, the model's definition and the preprocessing.
    Two indexes (or an index and a query) are comparable only when these agree."""
    h = hashlib.sha256()
    h.update(json.dumps({"model": model_spec.get("class"), "preprocess": preprocess}, sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class IndexStore:
    """Reads and writes generations of an index folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ reading
    def current(self) -> Path | None:
        pointer = self.root / "CURRENT"
        if not pointer.is_file():
            return None
        gen = self.root / pointer.read_text().strip()
        return gen if (gen / "manifest.json").is_file() else None

    def manifest(self) -> dict | None:
        gen = self.current()
        return json.loads((gen / "manifest.json").read_text()) if gen else None

    def require(self) -> Path:
        gen = self.current()
        if gen is None:
            raise ConfigError(f"index_dir={str(self.root)!r} holds no index: build one with "
                              f"python src/index.py media_dir=... index_dir={self.root}")
        m = json.loads((gen / "manifest.json").read_text())
        if m.get("format") != FORMAT_VERSION:
            raise ConfigError(f"{self.root}: index format {m.get('format')} is not {FORMAT_VERSION}: rebuild it")
        return gen

    def _read(self, gen: Path | None, sql: str) -> list[tuple]:
        """Rows of a query on a generation's metadata, opened read-only."""
        con = sqlite3.connect(f"file:{(gen or self.require()) / 'metadata.sqlite'}?mode=ro", uri=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def segments(self, gen: Path | None = None) -> list[Segment]:
        names = [f.name for f in fields(Segment)]
        return [Segment(*r) for r in self._read(gen, f"SELECT {', '.join(names)} FROM segments ORDER BY row")]

    def embeddings(self, gen: Path | None = None, mmap: bool = True) -> np.ndarray:
        gen = gen or self.require()
        return np.load(gen / "embeddings.npy", mmap_mode="r" if mmap else None, allow_pickle=False)

    def load_model(self, gen: Path | None = None) -> torch.nn.Module:
        """The model that built the index, from its own files (no checkpoint needed)."""
        from hydra.utils import get_class

        gen = gen or self.require()
        spec = json.loads((gen / "model.json").read_text())
        cls = get_class(spec["class"])
        hparams = dict(spec["hparams"])
        if "backbone" in hparams and isinstance(hparams["backbone"], dict):
            # the weights come from model.pt: do not fetch pretrained ones again
            hparams["backbone"] = {**hparams["backbone"], "weights": "none"}
        model = cls(**hparams)
        state = torch.load(gen / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()

    # ------------------------------------------------------------------ writing
    def work_dir(self, fp: str) -> Path:
        return self.root / "work" / fp

    def write_generation(self, segments: list[Segment], vectors: np.ndarray, manifest: dict,
                         model: torch.nn.Module, model_spec: dict, searcher=None) -> Path:
        """Write a complete generation, then switch ``CURRENT`` to it; older ones are removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        prev = self.current()
        n = int(prev.name.split("-")[1]) + 1 if prev is not None else 1
        gen = self.root / f"gen-{n:06d}"
        if gen.exists():  # left by a crash before CURRENT moved: never live, safe to replace
            shutil.rmtree(gen)
        tmp = self.root / f".{gen.name}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            self._write_files(tmp, segments, vectors, manifest, model, model_spec, searcher)
        except OSError as exc:  # full disk etc.: drop the partial folder, the live index is untouched
            shutil.rmtree(tmp, ignore_errors=True)
            from media_retrieval.errors import MediaRetrievalError

            raise MediaRetrievalError(f"cannot write the index to {self.root} ({exc.strerror or exc}); the live index "
                                      "is unchanged and the embedded batches are kept: free space and run again") from exc
        os.replace(tmp, gen)
        _atomic_write_bytes(self.root / "CURRENT", gen.name.encode())
        for old in self.root.glob("gen-*"):
            if old != gen:
                shutil.rmtree(old, ignore_errors=True)
        return gen

    def _write_files(self, tmp: Path, segments: list[Segment], vectors: np.ndarray, manifest: dict,
                     model: torch.nn.Module, model_spec: dict, searcher) -> None:
        np.save(tmp / "embeddings.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        con = sqlite3.connect(tmp / "metadata.sqlite")
        try:
            cols = [f.name for f in fields(Segment)]
            con.execute(f"CREATE TABLE segments (row INTEGER PRIMARY KEY, {', '.join(cols)})")
            con.executemany(f"INSERT INTO segments VALUES (?, {', '.join('?' * len(cols))})",
                            [(i, *asdict(s).values()) for i, s in enumerate(segments)])
            con.execute("CREATE INDEX segments_path ON segments(path)")
            con.execute("CREATE TABLE skipped (path TEXT, reason TEXT)")
            con.executemany("INSERT INTO skipped VALUES (?, ?)", manifest.get("skipped_files", []))
            con.commit()
        finally:
            con.close()
        torch.save(model.state_dict(), tmp / "model.pt")
        (tmp / "model.json").write_text(json.dumps(model_spec, indent=1, default=str))
        if searcher is not None:
            searcher.save(tmp / "search")
        manifest = {**manifest, "format": FORMAT_VERSION, "count": len(segments),
                    "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0}
        manifest.pop("skipped_files", None)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())

    def skipped(self, gen: Path | None = None) -> list[tuple[str, str]]:
        return self._read(gen, "SELECT path, reason FROM skipped")
