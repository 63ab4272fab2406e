"""Nearest-neighbour search backends behind one interface (``index.backend=``).

Every backend answers ``search(queries, k) -> (distances, indices)`` with *Euclidean* distances,
nearest first, so PAR (:mod:`media_retrieval.retrieval.par`) runs unchanged on top of any of them:

- ``exact``: torch, chunked matrix multiply (:func:`topk_euclidean`); optional k-means
  centroid pre-filtering (the paper's speed option): rank only the members of the ``probe``
  clusters nearest the query.
- ``flat``, ``ivf`` (IVF-Flat), ``hnsw``, ``ivfpq``: FAISS. We use FAISS rather than writing
  approximate search ourselves: it is the well-kept reference implementation, and its index
  files are plain binary (``faiss.write_index``), not pickle.

Optional PCA (:class:`PCAProjection`) keeps the smallest dimension that reaches a target share
of the variance (the paper's best practice, 0.90 by default); the backend then searches the
projected vectors. Backends save to and load from a folder, so an index opens without rebuilding.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from media_retrieval.errors import ConfigError
from media_retrieval.retrieval.distances import topk_euclidean

log = logging.getLogger(__name__)


@dataclass
class BackendOptions:
    """Knobs of every backend; each uses the ones it needs (defaults suit 10^4-10^6 vectors).

    ``nlist``: IVF lists (null: ~4 sqrt(N)); ``nprobe``: lists visited per query; ``hnsw_m`` and
    ``ef_search``/``ef_construction``: HNSW graph degree and search/build beam; ``pq_m``: PQ
    sub-quantisers (must divide the dimension); ``kmeans_clusters``/``kmeans_probe``: pre-filter of
    the exact backend (0 = off)."""

    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 128
    ef_construction: int = 200
    pq_m: int = 16
    pq_bits: int = 8
    kmeans_clusters: int = 0
    kmeans_probe: int = 8
    seed: int = 0
    # backend=milvus (retrieval/milvus.py): a file (Milvus Lite; None: <index_dir>/milvus.db) or a
    # server URI, the collection (and alias) name, and Milvus's index type
    milvus_uri: str | None = None
    milvus_collection: str = "media_retrieval"
    milvus_index: str = "FLAT"

    _TEXT = {"milvus_uri", "milvus_collection", "milvus_index"}
    # option -> smallest valid value (FAISS aborts the process on some out-of-range values)
    _MIN = {
        "nlist": 1,
        "nprobe": 1,
        "hnsw_m": 2,
        "ef_search": 1,
        "ef_construction": 1,
        "pq_m": 1,
        "pq_bits": 1,
        "kmeans_clusters": 0,
        "kmeans_probe": 1,
        "seed": 0,
    }

    @classmethod
    def from_dict(cls, d: dict | None) -> BackendOptions:
        d = {k: v for k, v in (d or {}).items() if v is not None or k == "nlist"}
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"unknown index option(s) {sorted(unknown)}; valid: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        for k, v in d.items():
            if v is None:
                continue
            if k in cls._TEXT:
                _check_text(k, v)
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < cls._MIN[k]:
                raise ConfigError(
                    f"index option {k} must be an integer >= {cls._MIN[k]}, got {v!r}"
                )
        if d.get("pq_bits") is not None and d["pq_bits"] > 16:
            raise ConfigError(f"index option pq_bits must be <= 16, got {d['pq_bits']}")
        return cls(**d)


def _check_text(key: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"index option {key} must be a non-empty string, got {value!r}")
    if key == "milvus_collection" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,180}", value):
        raise ConfigError(
            f"index option milvus_collection={value!r}: letters, digits and _ only, not starting "
            "with a digit"
        )
    if key == "milvus_index" and value not in ("FLAT", "IVF_FLAT", "HNSW", "IVF_PQ", "AUTOINDEX"):
        raise ConfigError(
            f"index option milvus_index={value!r}; valid: FLAT, IVF_FLAT, HNSW, IVF_PQ, AUTOINDEX"
        )


def _faiss():
    try:
        import faiss  # noqa: PLC0415 - optional dependency (faiss-cpu)
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ConfigError(
            "FAISS backends need the faiss-cpu package: pip install faiss-cpu"
        ) from exc
    return faiss


class PCAProjection:
    """Centre and project onto the leading principal components.

    Fitted with a (randomised when large) SVD on at most ``max_fit`` vectors; the kept dimension
    is the smallest reaching ``variance`` of the total, or ``dim`` when given."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, explained: np.ndarray) -> None:
        self.mean, self.components, self.explained = (
            mean.astype(np.float32),
            components.astype(np.float32),
            explained,
        )

    @property
    def dim(self) -> int:
        return self.components.shape[0]

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        variance: float | None = 0.9,
        dim: int | None = None,
        max_fit: int = 100_000,
        seed: int = 0,
    ) -> PCAProjection:
        if variance is None and dim is None:
            raise ConfigError("PCA needs a target variance (0 < v <= 1) or a dimension")
        if variance is not None and not 0.0 < variance <= 1.0:
            raise ConfigError(f"index.pca.variance must be in (0, 1], got {variance}")
        rng = np.random.default_rng(seed)
        sample = (
            x
            if x.shape[0] <= max_fit
            else x[np.sort(rng.choice(x.shape[0], max_fit, replace=False))]
        )
        sample = np.asarray(sample, dtype=np.float64)
        mean = sample.mean(0)
        _, s, vt = np.linalg.svd(sample - mean, full_matrices=False)
        var = s**2
        ratio = np.cumsum(var) / max(var.sum(), 1e-12)
        keep = dim if dim is not None else int(np.searchsorted(ratio, variance - 1e-9) + 1)
        keep = max(1, min(keep, vt.shape[0]))
        return cls(mean, vt[:keep], var[:keep] / max(var.sum(), 1e-12))

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
        for s in range(0, x.shape[0], 65536):  # bounded memory on memory-mapped input
            out[s : s + 65536] = (
                np.asarray(x[s : s + 65536], dtype=np.float32) - self.mean
            ) @ self.components.T
        return out

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, components=self.components, explained=self.explained)

    @classmethod
    def load(cls, path: Path) -> PCAProjection:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["mean"], z["components"], z["explained"])


class SearchBackend:
    """Builds from (N, D) float32 vectors, answers Euclidean top-k, saves to a folder.

    Everything the index store needs to know of a backend is said here, so the store names
    none: whether it parses local files, which top-level entries of the index folder it owns,
    how it reads its recorded options, and the publish/activate steps of one held outside."""

    name = "base"
    #: the backend's files in ``search/`` are parsed by native code (FAISS, NumPy): an index
    #: from elsewhere is rebuilt from its checked vectors instead of loaded from them
    parses_local_files = True
    #: whether a PCA projection may sit in front of it
    supports_pca = True
    #: entries it keeps at the index folder's top level (checked never to be links)
    folder_entries: tuple[str, ...] = ()

    def __init__(self, options: BackendOptions) -> None:
        self.options = options

    def build(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        raise NotImplementedError

    def load(self, folder: Path, x: np.ndarray) -> None:
        """Open a saved backend; ``x`` is the (memory-mapped) vectors it was built on."""
        raise NotImplementedError

    @classmethod
    def checked_meta(cls, gen: Path, meta: dict, overrides: dict | None, trusted: bool) -> dict:
        """``search/backend.json`` as this backend may use it. An index folder is data: a backend
        whose recorded options say where to connect decides here what of them to believe."""
        return meta

    def publish(self, root: Path, generation: str, segments: list, manifest: dict) -> None:
        """Write ``generation`` where the backend keeps it (nothing to do for a local one)."""

    def activate(self, root: Path, generation: str) -> None:
        """Switch readers to ``generation`` once the index's CURRENT names it."""


_BACKEND_TYPES: dict[str, type[SearchBackend]] = {}


def register_backend(name: str):
    """Class decorator: ``index.backend=<name>`` builds this class. The valid names are also
    listed in ``config.index.BACKENDS`` (checked before torch loads); a test keeps the two
    equal."""

    def add(cls: type[SearchBackend]) -> type[SearchBackend]:
        cls.name = name
        _BACKEND_TYPES[name] = cls
        return cls

    return add


def backend_type(name: object) -> type[SearchBackend]:
    """The class of a backend named by a config or an index file (looked up, never imported)."""
    if not isinstance(name, str) or name not in _BACKEND_TYPES:
        raise ConfigError(
            f"index.backend={str(name)[:40]!r}; valid: {', '.join(sorted(_BACKEND_TYPES))}"
        )
    return _BACKEND_TYPES[name]


def backend_folder_entries() -> tuple[str, ...]:
    """What the registered backends keep at an index folder's top level."""
    return tuple(e for cls in _BACKEND_TYPES.values() for e in cls.folder_entries)


@register_backend("exact")
class ExactBackend(SearchBackend):
    """Brute force in torch; with ``kmeans_clusters`` > 0, only the members of the ``kmeans_probe``
    clusters nearest each query are ranked (approximate, faster on large collections)."""

    def build(self, x: np.ndarray) -> None:
        xt = torch.from_numpy(np.array(x, dtype=np.float32))  # a copy: x may be a read-only memmap
        centroids = assign = None
        if self.options.kmeans_clusters:
            c = min(self.options.kmeans_clusters, x.shape[0])
            km = _faiss().Kmeans(x.shape[1], c, niter=20, seed=self.options.seed, verbose=False)
            km.train(xt.numpy())
            centroids = torch.from_numpy(km.centroids)
            assign = topk_euclidean(xt, centroids, 1)[1][:, 0]
        self._set(xt, centroids, assign)

    def _set(
        self, x: torch.Tensor, centroids: torch.Tensor | None, assign: torch.Tensor | None
    ) -> None:
        """The searchable state; the squared norms and each cluster's members derive from it."""
        self.x, self.centroids, self.assign = x, centroids, assign
        self.x_sq = (x * x).sum(-1)
        self.members = None
        if assign is not None:
            order = torch.argsort(assign, stable=True)
            counts = torch.bincount(assign, minlength=centroids.shape[0])
            self.members = list(torch.split(order, counts.tolist()))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
        if self.centroids is None:
            d, i = topk_euclidean(qt, self.x, k, g_sq=self.x_sq)
            return d.numpy(), i.numpy()
        probe = min(self.options.kmeans_probe, self.centroids.shape[0])
        near = topk_euclidean(qt, self.centroids, probe)[1]
        dist = np.full((q.shape[0], k), np.inf, dtype=np.float32)
        idx = np.full((q.shape[0], k), -1, dtype=np.int64)
        for r in range(q.shape[0]):  # candidate sets differ per query
            cand = torch.cat([self.members[c] for c in near[r].tolist()])
            d, i = topk_euclidean(qt[r : r + 1], self.x[cand], k, g_sq=self.x_sq[cand])
            n = d.shape[1]
            dist[r, :n], idx[r, :n] = d[0].numpy(), cand[i[0]].numpy()
        return dist, idx

    def save(self, folder: Path) -> None:
        if self.centroids is not None:
            np.savez(
                folder / "kmeans.npz", centroids=self.centroids.numpy(), assign=self.assign.numpy()
            )

    def load(self, folder: Path, x: np.ndarray) -> None:
        centroids = assign = None
        if (folder / "kmeans.npz").is_file():
            with np.load(folder / "kmeans.npz", allow_pickle=False) as z:
                centroids, assign = torch.from_numpy(z["centroids"]), torch.from_numpy(z["assign"])
        self._set(torch.from_numpy(np.array(x, dtype=np.float32)), centroids, assign)


class FaissBackend(SearchBackend):
    """FAISS index of the kind its registered name says; distances come back squared and are
    square-rooted here."""

    def _make(self, n: int, d: int):
        faiss = _faiss()
        o = self.options
        if self.name == "flat":
            return faiss.IndexFlatL2(d)
        if self.name == "hnsw":
            index = faiss.IndexHNSWFlat(d, o.hnsw_m)
            index.hnsw.efConstruction = o.ef_construction
            return index
        nlist = o.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatL2(d)
        if self.name == "ivf":
            return faiss.IndexIVFFlat(quantizer, d, nlist)
        if d % o.pq_m:
            raise ConfigError(f"index.pq_m={o.pq_m} must divide the vector dimension {d} (ivfpq)")
        return faiss.IndexIVFPQ(quantizer, d, nlist, o.pq_m, o.pq_bits)

    def _tune(self) -> None:
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = self.options.nprobe
        if self.name == "hnsw":
            self.index.hnsw.efSearch = self.options.ef_search

    def build(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.index = self._make(*x.shape)
        if not self.index.is_trained:
            rng = np.random.default_rng(self.options.seed)
            n_train = min(x.shape[0], max(256 * getattr(self.index, "nlist", 1), 50_000))
            train = (
                x
                if n_train == x.shape[0]
                else x[np.sort(rng.choice(x.shape[0], n_train, replace=False))]
            )
            self.index.train(train)
        self.index.add(x)
        self._tune()

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        d, i = self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)
        return np.sqrt(np.maximum(d, 0)), i

    def save(self, folder: Path) -> None:
        _faiss().write_index(self.index, str(folder / "faiss.index"))

    def load(self, folder: Path, x: np.ndarray) -> None:
        path = folder / "faiss.index"
        if not path.is_file():
            raise ConfigError(
                f"{path} is missing: the index was not built with backend {self.name!r}"
            )
        self.index = _faiss().read_index(str(path))
        self._tune()


@register_backend("flat")
class FaissFlat(FaissBackend):
    """Exact search in FAISS."""


@register_backend("ivf")
class FaissIVF(FaissBackend):
    """Inverted lists: probes ``nprobe`` of ``nlist`` cells."""


@register_backend("hnsw")
class FaissHNSW(FaissBackend):
    """A navigable small-world graph."""


@register_backend("ivfpq")
class FaissIVFPQ(FaissBackend):
    """Inverted lists over product-quantised vectors (the smallest memory)."""


def make_backend(name: str, options: BackendOptions | dict | None = None) -> SearchBackend:
    opts = options if isinstance(options, BackendOptions) else BackendOptions.from_dict(options)
    kind = backend_type(name)
    if opts.kmeans_clusters and name != "exact":
        raise ConfigError(
            "index.kmeans_clusters pre-filters the exact backend only (ivf is the FAISS equivalent)"
        )
    return kind(opts)


class VectorSearcher:
    """PCA (optional) + backend, with exact re-scoring of the candidates.

    The backend proposes ``k`` candidates in its (possibly projected, possibly approximate)
    space; distances and cosines reported to users and used by PAR are recomputed on the
    original vectors, so PCA or PQ changes *which* items come back, never their reported scores."""

    def __init__(
        self,
        vectors: np.ndarray,
        backend: SearchBackend,
        pca: PCAProjection | None = None,
        pca_args: dict | None = None,
    ) -> None:
        self.vectors, self.backend, self.pca = vectors, backend, pca
        self.pca_args = pca_args or {"variance": None, "dim": None}

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        backend: str = "exact",
        options: dict | None = None,
        pca_variance: float | None = None,
        pca_dim: int | None = None,
    ) -> VectorSearcher:
        pca = None
        if not backend_type(backend).supports_pca and (
            pca_variance is not None or pca_dim is not None
        ):
            raise ConfigError(
                f"index.pca with index.backend={backend} is not supported: it holds the full "
                "vectors"
            )
        if pca_variance is not None or pca_dim is not None:
            pca = PCAProjection.fit(vectors, pca_variance, pca_dim)
            log.info(
                "PCA keeps %d of %d dimensions (%.1f %% of the variance)",
                pca.dim,
                vectors.shape[1],
                100 * pca.explained.sum(),
            )
        b = make_backend(backend, options)
        b.build(pca.transform(vectors) if pca is not None else vectors)
        return cls(vectors, b, pca, {"variance": pca_variance, "dim": pca_dim})

    def publish(self, root: Path, generation: str, segments: list, manifest: dict) -> None:
        """Backends that live outside the index folder (Milvus) write the generation there."""
        self.backend.publish(root, generation, segments, manifest)

    def activate(self, root: Path, generation: str) -> None:
        """... and switch their readers to it once the index's CURRENT points at it."""
        self.backend.activate(root, generation)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(folder)
        if self.pca is not None:
            self.pca.save(folder / "pca.npz")
        (folder / "backend.json").write_text(
            json.dumps(
                {
                    "backend": self.backend.name,
                    "pca": self.pca_args,
                    "options": self.backend.options.__dict__,
                }
            )
        )

    @staticmethod
    def _options(meta: dict, overrides: dict | None) -> dict:
        if not isinstance(meta.get("options"), dict):
            raise ConfigError("backend.json has no options")
        return {**meta["options"], **{k: v for k, v in (overrides or {}).items() if v is not None}}

    @classmethod
    def load(
        cls,
        folder: Path,
        vectors: np.ndarray,
        overrides: dict | None = None,
        meta: dict | None = None,
    ) -> VectorSearcher:
        """Open a saved backend. FAISS and PCA files are parsed by C++ / NumPy: only for files
        this machine wrote (see :meth:`rebuild` for the others)."""
        meta = meta if meta is not None else json.loads((folder / "backend.json").read_text())
        options = cls._options(meta, overrides)
        pca = PCAProjection.load(folder / "pca.npz") if (folder / "pca.npz").is_file() else None
        b = make_backend(meta.get("backend"), options)
        b.load(
            folder,
            pca.transform(vectors) if pca is not None and meta["backend"] == "exact" else vectors,
        )
        return cls(vectors, b, pca, meta.get("pca"))

    @classmethod
    def rebuild(
        cls, vectors: np.ndarray, meta: dict, overrides: dict | None = None
    ) -> VectorSearcher:
        """The same backend built anew from ``vectors`` and the recorded (checked) options:
        nothing but the vectors is read."""
        pca = meta.get("pca") if isinstance(meta.get("pca"), dict) else {}
        variance, dim = pca.get("variance"), pca.get("dim")
        if variance is not None and (
            not isinstance(variance, (int, float)) or isinstance(variance, bool)
        ):
            raise ConfigError(f"backend.json: PCA variance {variance!r} is not a number")
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            raise ConfigError(f"backend.json: PCA dim {dim!r} is not a positive integer")
        return cls.build(vectors, meta.get("backend"), cls._options(meta, overrides), variance, dim)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(distances, cosines, indices), each (Q, k'), nearest first; k' = min(k, N); -1 = no
        hit."""
        k = min(k, self.vectors.shape[0])
        q = np.ascontiguousarray(q, dtype=np.float32)
        _, idx = self.backend.search(self.pca.transform(q) if self.pca is not None else q, k)
        safe = np.where(idx < 0, 0, idx)
        rows = np.unique(
            safe
        )  # sorted: each candidate row is read once from the (memory-mapped) vectors
        cand = np.asarray(self.vectors[rows], dtype=np.float32)
        pos = np.searchsorted(rows, safe)
        g = torch.from_numpy(cand)[torch.from_numpy(pos)]  # (Q, k, D)
        qt = torch.from_numpy(q)
        dist = (g - qt[:, None]).norm(dim=-1)
        cos = torch.nn.functional.cosine_similarity(g, qt[:, None].expand_as(g), dim=-1, eps=1e-12)
        dist[torch.from_numpy(idx < 0)] = float("inf")
        order = torch.argsort(
            dist, dim=1, stable=True
        )  # exact distances may reorder approximate hits
        return (
            torch.gather(dist, 1, order).numpy(),
            torch.gather(cos, 1, order).numpy(),
            np.take_along_axis(idx, order.numpy(), 1),
        )
