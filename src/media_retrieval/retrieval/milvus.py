"""``index.backend=milvus``: the vectors, and what a searcher needs of each segment, in a Milvus
collection (Milvus Lite in a local file by default, or a server / cluster).

Why an existing engine: a library that outgrows one machine needs sharding, replicas and
concurrent searchers, which Milvus provides; a home-made distributed index would not be
maintained as well. The project keeps what makes an index trustworthy (its folder: manifest,
model weights, clip spec, segment table) and puts the searchable part in Milvus:

- each generation is one collection, ``<collection>_gen_NNNNNN``, with one row per segment:
  ``row`` (primary key: the row of the generation's segment table), ``key`` (stable segment
  key), ``rel_path``, ``media_type``, ``start_s``/``end_s`` (-1 for whole files), ``generation``
  and the vector; its properties record the model fingerprint, the clip spec and the
  generation;
- the alias ``<collection>`` is switched to the new collection once it is complete and the
  index's ``CURRENT`` points at it: readers of the alias see one generation or the next, never a
  half-written one. A generation's collection is dropped when its folder is (no reader left);
- a reader refuses a collection whose fingerprint is not its manifest's (one line).

Candidates come from Milvus; distances and cosines are recomputed exactly on the index's own
vectors (:class:`~media_retrieval.retrieval.backends.VectorSearcher`), as for every backend.
The server token comes from ``$MILVUS_TOKEN`` and is never written to the index.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from media_retrieval.errors import ConfigError

log = logging.getLogger(__name__)

#: the Milvus Lite file of an index whose ``milvus_uri`` is unset: inside the index folder
LITE_FILE = "milvus.db"
INSERT_BATCH = 5000


def _client(uri: str):
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise ConfigError("index.backend=milvus needs pymilvus (and milvus-lite for a local file): "
                          "pip install pymilvus milvus-lite") from exc
    try:
        return MilvusClient(uri, token=os.environ.get("MILVUS_TOKEN", ""))
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise ConfigError(f"cannot connect to Milvus at {uri} ({type(exc).__name__}: {str(exc)[:160]})") from exc


def collection_name(base: str, generation: str) -> str:
    return f"{base}_{generation.replace('-', '_')}"


class MilvusBackend:
    """The search backend over a Milvus collection (see the module docstring)."""

    name = "milvus"

    def __init__(self, options) -> None:  # noqa: ANN001 - BackendOptions
        self.options = options
        self._x: np.ndarray | None = None
        self.client = None
        self.collection: str | None = None
        self.rows, self.dim = 0, 0

    # ------------------------------------------------------------------ where
    def uri(self, root: Path) -> str:
        return self.options.milvus_uri or str(Path(root) / LITE_FILE)

    # ------------------------------------------------------------------ building
    def build(self, x: np.ndarray) -> None:
        """Keep the vectors: they are written with their segments by :meth:`publish`."""
        self._x = np.ascontiguousarray(x, dtype=np.float32)

    def publish(self, root: Path, generation: str, segments: list, manifest: dict) -> None:
        """Write the generation's collection (complete before anyone is pointed at it)."""
        from pymilvus import DataType

        assert self._x is not None, "build() first"
        client = _client(self.uri(root))
        name = collection_name(self.options.milvus_collection, generation)
        if client.has_collection(name):  # left by a build that crashed before switching to it
            client.drop_collection(name)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row", DataType.INT64, is_primary=True)
        schema.add_field("key", DataType.VARCHAR, max_length=256)
        schema.add_field("rel_path", DataType.VARCHAR, max_length=4096)
        schema.add_field("media_type", DataType.VARCHAR, max_length=16)
        schema.add_field("start_s", DataType.DOUBLE)
        schema.add_field("end_s", DataType.DOUBLE)
        schema.add_field("generation", DataType.VARCHAR, max_length=32)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(self._x.shape[1]))
        params = client.prepare_index_params()
        params.add_index("vector", index_type=self.options.milvus_index, metric_type="L2")
        client.create_collection(name, schema=schema, index_params=params, properties={
            "mr.fingerprint": manifest["fingerprint"], "mr.generation": generation,
            "mr.clip_spec": json.dumps(manifest.get("clip_spec"), sort_keys=True)})
        for s in range(0, len(segments), INSERT_BATCH):
            client.insert(name, [
                {"row": i, "key": seg.key, "rel_path": seg.rel_path, "media_type": seg.media_type,
                 "start_s": -1.0 if seg.start_s is None else float(seg.start_s),
                 "end_s": -1.0 if seg.end_s is None else float(seg.end_s), "generation": generation,
                 "vector": self._x[i]}
                for i, seg in enumerate(segments[s:s + INSERT_BATCH], start=s)])
        self.client, self.collection, self.rows = client, name, len(segments)
        self.dim = int(self._x.shape[1])

    def activate(self, root: Path, generation: str) -> None:
        """Point the alias at this generation's collection; drop the collections of
        generations whose folders are gone (no reader holds them any more)."""
        client = _client(self.uri(root))
        base, name = self.options.milvus_collection, collection_name(self.options.milvus_collection, generation)
        collections = client.list_collections()
        if any(base in client.list_aliases(c).get("aliases", []) for c in collections):
            client.alter_alias(name, base)  # one atomic switch for readers of the alias
        else:
            client.create_alias(name, base)
        for other in collections:
            if other.startswith(f"{base}_gen_") and other != name:
                gen = other[len(base) + 1:].replace("_", "-")
                if not (Path(root) / gen).exists():
                    client.drop_collection(other)

    # ------------------------------------------------------------------ searching
    def save(self, folder: Path) -> None:
        """Nothing local: the collection is the backend (backend.json records the options)."""

    def load(self, folder: Path, x: np.ndarray) -> None:
        """Open the generation's collection and check it is this index's (its fingerprint)."""
        root, generation = folder.parent.parent, folder.parent.name
        manifest = json.loads((folder.parent / "manifest.json").read_text())
        uri = self.uri(root)
        client = _client(uri)
        name = collection_name(self.options.milvus_collection, generation)
        if not client.has_collection(name):
            raise ConfigError(f"Milvus collection {name} is missing at {uri}: rebuild the index "
                              "(index.rebuild=true), or point index.options.milvus_uri at the right server")
        props = client.describe_collection(name).get("properties") or {}
        if props.get("mr.fingerprint") != manifest.get("fingerprint"):
            raise ConfigError(f"Milvus collection {name} at {uri} holds another model's embeddings (fingerprint "
                              f"{props.get('mr.fingerprint')!r}, this index: {manifest.get('fingerprint')!r}): "
                              "rebuild the index (index.rebuild=true)")
        client.load_collection(name)
        self.client, self.collection, self.rows, self.dim = client, name, int(x.shape[0]), int(x.shape[1])

    def _chunk(self) -> int:
        """Queries per request: 256 to a server; Milvus Lite (a local file) searches by brute
        force holding queries x rows x dim floats at once whatever the index type (10^5 rows of
        256-d: 100 MB per query; benchmarks/README.md), so it gets ~512 MB worth at a time."""
        if self.options.milvus_uri and "://" in self.options.milvus_uri:
            return 256
        return max(1, min(256, int(2**29 // (4 * max(self.rows, 1) * max(self.dim, 1)))))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.client is not None, "load() or publish() first"
        q = np.asarray(q, dtype=np.float32)
        step = self._chunk()
        res = []
        for s in range(0, len(q), step):
            res += self.client.search(self.collection, data=list(q[s:s + step]), limit=k, output_fields=["row"],
                                      search_params={"metric_type": "L2"})
        dist = np.full((len(q), k), np.inf, dtype=np.float32)
        idx = np.full((len(q), k), -1, dtype=np.int64)
        for i, hits in enumerate(res):
            for j, hit in enumerate(hits[:k]):
                idx[i, j] = int(hit["id"] if "id" in hit else hit["entity"]["row"])
                dist[i, j] = float(np.sqrt(max(hit["distance"], 0.0)))  # Milvus L2 is squared
        return dist, idx
