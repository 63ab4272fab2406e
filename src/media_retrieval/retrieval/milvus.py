"""``index.backend=milvus``: the vectors, and what a searcher needs of each segment, in a Milvus
collection (Milvus Lite in a local file by default, or a server / cluster).

Why an existing engine: a library that outgrows one machine needs sharding, replicas and
concurrent searchers, which Milvus provides; a home-made distributed index would not be
maintained as well. The project keeps what makes an index trustworthy (its folder: manifest,
model weights, clip spec, segment table) and puts the searchable part in Milvus.

Why one collection with row versions, not one collection per generation: an update of a
library of 10^8 clips changes a few thousand rows; writing the other 10^8 again per generation
would cost hours and double the engine's storage. So the collection of a model,
``<collection>_fp_<fingerprint>``, holds one row per segment *version*:

- ``sid`` identifies a segment's content and place (segment key, relative path, span); the
  primary key ``pk`` is ``<sid>@<gen_from>``; ``gen_from``/``gen_to`` say which generations
  see the row (``gen_from <= G < gen_to``; ``gen_to`` = :data:`LIVE` while current);
- publishing generation ``G`` inserts the rows whose ``sid`` is new (added, changed or moved
  files) with ``gen_from = G``, and retires the rows whose ``sid`` is gone (deleted, changed,
  moved) by an upsert of ``gen_to = G``; unchanged rows are not touched. Readers of ``G - 1``
  see neither change (their filter excludes ``gen_from = G`` and still includes
  ``gen_to = G``), and readers of ``G`` exist only once ``CURRENT`` points at it: the switch is
  atomic for readers. A publish that crashed is undone by the next one before it starts;
- rows no generation on disk can see (``gen_to <=`` the oldest folder) are deleted when a
  generation is activated, and so are the collections of models no generation uses;
- the alias ``<collection>`` follows the current model's collection (for other tools), and the
  collection's properties record the fingerprint, the clip spec, the current generation and
  the index folder that owns it (a second index pointed at the same collection is refused).

Candidates come from Milvus as ``sid``s that a reader maps onto its own segment table (so no
path or value from the engine reaches a file operation); distances and cosines are recomputed
exactly on the index's own vectors (:class:`~media_retrieval.retrieval.backends.VectorSearcher`),
as for every backend. The server token comes from ``$MILVUS_TOKEN`` and is never written to the
index.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path

import numpy as np

from media_retrieval.errors import ConfigError, MediaRetrievalError
from media_retrieval.retrieval.backends import SearchBackend, register_backend
from media_retrieval.retrieval.index_store import (
    GEN_NAME,
    IndexStore,
    corrupt,
    read_manifest,
    segment_ids,
)

log = logging.getLogger(__name__)

#: the Milvus Lite file of an index whose ``milvus_uri`` is unset: inside the index folder
LITE_FILE = "milvus.db"
#: the index folder's identity in the collections it owns
OWNER_FILE = "milvus-owner"
#: ``gen_to`` of a row the current generation still sees
LIVE = 2**62
BATCH = 5000
#: seconds between checks that the collection still holds the opened generation's rows (each
#: check is a round trip to the engine)
DRIFT_CHECK_S = 60.0


def _client(uri: str):
    try:
        from pymilvus import MilvusClient  # noqa: PLC0415 - optional dependency (the milvus extra)
    except ImportError as exc:
        raise ConfigError(
            "index.backend=milvus needs pymilvus (and milvus-lite for a local file): "
            "pip install pymilvus milvus-lite"
        ) from exc
    try:
        return MilvusClient(uri, token=os.environ.get("MILVUS_TOKEN", ""))
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise ConfigError(
            f"cannot connect to Milvus at {uri} ({type(exc).__name__}: {str(exc)[:160]})"
        ) from exc


def _engine_errors(method):
    """An engine's refusal (unreachable server, a collection changed behind our back) as one
    line naming the engine; this project's own errors pass unchanged."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except MediaRetrievalError:
            raise
        except Exception as exc:
            if not type(exc).__module__.startswith(("pymilvus", "grpc", "milvus_lite")):
                raise
            detail = getattr(exc, "message", None) or str(exc).splitlines()[0]
            raise MediaRetrievalError(
                f"Milvus ({self.options.milvus_uri or LITE_FILE}) refused {method.__name__}: "
                f"{str(detail)[:200]}"
            ) from exc

    return wrapper


def collection_name(base: str, fingerprint: str) -> str:
    """The collection of one model's embeddings (the fingerprint is hex: a valid name)."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", str(fingerprint)):
        raise ConfigError(
            f"fingerprint {str(fingerprint)[:40]!r} is not hex: the index manifest is damaged"
        )
    return f"{base}_fp_{fingerprint}"


def generation_number(generation: str) -> int:
    if not GEN_NAME.fullmatch(generation):
        raise ConfigError(f"{generation!r} is not a generation folder name (gen-NNNNNN)")
    return int(generation[len("gen-") :])


def _table_sids(gen: Path) -> list[str]:
    """The segment ids of a generation, in the order of its segment table's rows (read
    through the index's read-only SQLite reader)."""
    return [segment_id(*r) for r in segment_ids(gen)]


def _fingerprint_of(gen: Path) -> str:
    """A generation's fingerprint, from its manifest (read size-bounded, as every index JSON)."""
    return str(read_manifest(gen).get("fingerprint", ""))


def segment_id(key: str, rel_path: str, start_s: float | None, end_s: float | None) -> str:
    """One segment's content and place: a changed, moved or re-cut file gets a new id."""
    span = [None if t is None else float(t) for t in (start_s, end_s)]
    return hashlib.sha256(json.dumps([key, rel_path, *span]).encode()).hexdigest()[:32]


def owner_id(root: Path, create: bool) -> str | None:
    """The index folder's identity (a random id in ``<index_dir>/milvus-owner``, data only)."""
    path = Path(root) / OWNER_FILE
    if path.exists() or path.is_symlink():
        text = (
            ""
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 64
            else path.read_text(errors="replace").strip()
        )
        if not re.fullmatch(r"[0-9a-f]{32}", text):
            raise ConfigError(
                f"{path} is damaged (expected 32 hex digits); restore it or rebuild into a new "
                "collection"
            )
        return text
    if not create:
        return None
    text = uuid.uuid4().hex
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644
    )  # never through a link
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return text


def _iterate(client, name: str, filter: str, fields: list[str]):  # noqa: A002 - Milvus's word
    it = client.query_iterator(name, batch_size=BATCH, filter=filter, output_fields=fields)
    try:
        while batch := it.next():
            yield from batch
    finally:
        it.close()


@register_backend("milvus")
class MilvusBackend(SearchBackend):
    """The search backend over a Milvus collection (see the module docstring)."""

    parses_local_files = False  # search/ holds only checked JSON; the vectors live in Milvus
    supports_pca = False  # Milvus holds the full vectors
    folder_entries = (LITE_FILE, OWNER_FILE)

    def __init__(self, options) -> None:  # noqa: ANN001 - BackendOptions
        super().__init__(options)
        self._x: np.ndarray | None = None
        self.client = None
        self.collection: str | None = None
        self.rows, self.dim = 0, 0
        self._filter = ""
        self._row_of: dict[str, int] = {}
        self._checked_at = 0.0
        #: what the last publish did: rows inserted, retired and left alone
        self.changes = {"inserted": 0, "retired": 0, "unchanged": 0}

    @classmethod
    def checked_meta(cls, gen: Path, meta: dict, overrides: dict | None, trusted: bool) -> dict:
        """Where a Milvus-backed index connects: only where the *user* says. An index folder is
        data, so the ``milvus_uri`` its ``backend.json`` records is at most compared with the one
        the
        user gave (``index.options.milvus_uri``, or ``$MILVUS_URI``): a foreign index cannot make
        us connect to a host it names (sending ``$MILVUS_TOKEN`` there) or create a file outside
        its folder. Without a recorded URI it is the Milvus Lite file inside the index folder.
        An index this machine built (or one the user marks ``index.trusted=true``) recorded the
        user's own URI, so it may use it."""
        options = meta.get("options") if isinstance(meta.get("options"), dict) else {}
        stored = options.get("milvus_uri")
        given = (overrides or {}).get("milvus_uri") or os.environ.get("MILVUS_URI") or None
        root = gen.parent
        if stored is not None and not isinstance(stored, str):
            raise corrupt(gen, "search/backend.json: milvus_uri is not a string")
        if given is not None and stored is not None and given != stored:
            raise ConfigError(
                f"index {root} was built on Milvus at {stored[:120]!r}, not at the given "
                f"milvus_uri={given[:120]!r}: give the server it was built on, or rebuild it there"
            )
        if stored is not None and given is None and not trusted:
            raise ConfigError(
                f"index {root} came from elsewhere and names a Milvus server ({stored[:120]!r}); "
                "an "
                "index folder cannot choose where to connect: if you trust that server, open it "
                "with "
                f"index.options.milvus_uri='{stored[:120]}' (or MILVUS_URI), or rebuild the index"
            )
        if stored is None and given is not None:
            raise ConfigError(
                f"index {root} keeps its vectors in its own Milvus Lite file, not at "
                f"milvus_uri={given[:120]!r}: drop that option to open it"
            )
        if stored is None:
            lite = root / LITE_FILE
            if lite.is_symlink():  # Milvus Lite would write wherever it points
                raise corrupt(gen, "milvus.db is a symbolic link")
        return {**meta, "options": {**options, "milvus_uri": stored}}

    # ------------------------------------------------------------------ where
    def uri(self, root: Path) -> str:
        return self.options.milvus_uri or str(Path(root) / LITE_FILE)

    # ------------------------------------------------------------------ building
    def build(self, x: np.ndarray) -> None:
        """Keep the vectors: they are written with their segments by :meth:`publish`."""
        self._x = np.ascontiguousarray(x, dtype=np.float32)

    def _open_for_writing(self, client, name: str, root: Path, manifest: dict) -> tuple[bool, dict]:
        from pymilvus import DataType  # noqa: PLC0415 - optional dependency (the milvus extra)

        owner = owner_id(root, create=True)
        if client.has_collection(name):
            props = client.describe_collection(name).get("properties") or {}
            if props.get("mr.owner") != owner:
                raise ConfigError(
                    f"Milvus collection {name} at {self.uri(root)} belongs to another index folder "
                    f"(owner {props.get('mr.owner')!r}, this one {owner}): give this index its own "
                    "index.options.milvus_collection, or drop that collection"
                )
            if props.get("mr.fingerprint") != manifest["fingerprint"]:
                raise ConfigError(
                    f"Milvus collection {name} holds another model's embeddings (fingerprint "
                    f"{props.get('mr.fingerprint')!r}); drop it, or use another milvus_collection"
                )
            return False, props
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=48)
        schema.add_field("sid", DataType.VARCHAR, max_length=32)
        schema.add_field("key", DataType.VARCHAR, max_length=256)
        schema.add_field("rel_path", DataType.VARCHAR, max_length=4096)
        schema.add_field("media_type", DataType.VARCHAR, max_length=16)
        schema.add_field("start_s", DataType.DOUBLE)
        schema.add_field("end_s", DataType.DOUBLE)
        schema.add_field("gen_from", DataType.INT64)
        schema.add_field("gen_to", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(self._x.shape[1]))
        params = client.prepare_index_params()
        params.add_index("vector", index_type=self.options.milvus_index, metric_type="L2")
        params.add_index(
            "sid", index_type="INVERTED"
        )  # a server finds an update's rows by sid without a scan
        client.create_collection(
            name,
            schema=schema,
            index_params=params,
            properties={
                "mr.fingerprint": manifest["fingerprint"],
                "mr.owner": owner,
                "mr.current": "0",
                "mr.clip_spec": json.dumps(manifest.get("clip_spec"), sort_keys=True),
            },
        )
        return True, {}

    @_engine_errors
    def publish(self, root: Path, generation: str, segments: list, manifest: dict) -> None:
        """Bring the collection from the live generation to ``generation`` by inserts and
        retirements keyed by segment id; readers of the live one see no change.

        The difference is computed against the live generation's own segment table (local),
        so an update reads from the engine only the rows it retires, never the whole library."""
        assert self._x is not None, "build() first"
        g = generation_number(generation)
        client = _client(self.uri(root))
        name = collection_name(self.options.milvus_collection, manifest["fingerprint"])
        created, props = self._open_for_writing(client, name, root, manifest)
        client.load_collection(name)  # a new process (or server restart) finds it released
        pending = int(props.get("mr.pending") or 0)
        live = IndexStore(root).current()
        if pending and (
            live is None or live.name != f"gen-{pending:06d}"
        ):  # crashed before CURRENT named it:
            self._undo(client, name, min(pending, g))  # undo what it wrote (no reader can see it)
        client.alter_collection_properties(name, properties={"mr.pending": str(g)})
        sids = [segment_id(seg.key, seg.rel_path, seg.start_s, seg.end_s) for seg in segments]
        wanted = set(sids)
        before = set() if created else self._live_sids(client, name, live, manifest["fingerprint"])
        new = [i for i, sid in enumerate(sids) if sid not in before]
        gone = self._live_pks(client, name, sorted(before - wanted))
        for s in range(0, len(new), BATCH):
            client.insert(name, [self._row(segments[i], sids[i], i, g) for i in new[s : s + BATCH]])
        for s in range(0, len(gone), BATCH):  # after the inserts: a crash in between leaves no hole
            client.upsert(
                name, [{"pk": pk, "gen_to": g} for pk in gone[s : s + BATCH]], partial_update=True
            )
        self.changes = {
            "inserted": len(new),
            "retired": len(gone),
            "unchanged": len(sids) - len(new),
        }
        log.info(
            "Milvus %s, %s: %d rows inserted, %d retired, %d unchanged",
            name,
            generation,
            *self.changes.values(),
        )
        self._attach(client, name, g, sids, int(self._x.shape[1]))

    @staticmethod
    def _undo(client, name: str, g: int) -> None:
        client.delete(name, filter=f"gen_from >= {g}")
        stale = [
            r["pk"] for r in _iterate(client, name, f"gen_to >= {g} and gen_to < {LIVE}", ["pk"])
        ]
        for s in range(0, len(stale), BATCH):
            client.upsert(
                name,
                [{"pk": pk, "gen_to": LIVE} for pk in stale[s : s + BATCH]],
                partial_update=True,
            )
        log.info("Milvus %s: undid a publish of generation %d that did not finish", name, g)

    @staticmethod
    def _live_sids(client, name: str, live: Path | None, fingerprint: str) -> set[str]:
        """The segment ids the collection's live rows hold: the live generation's, when it is
        this model's (read from its segment table); otherwise read from the engine (a model
        that comes back after another one: rare, and a scan)."""
        if live is not None and _fingerprint_of(live) == fingerprint:
            return set(_table_sids(live))
        return {r["sid"] for r in _iterate(client, name, f"gen_to == {LIVE}", ["sid"])}

    @staticmethod
    def _live_pks(client, name: str, sids: list[str]) -> list[str]:
        """The primary keys of these segments' live rows. One query per 10 000 ids: an engine
        without a scalar index on ``sid`` (Milvus Lite) scans per query, whatever its length;
        the live test is done here because a second condition doubled Lite's scan."""
        pks = []
        for s in range(0, len(sids), 10_000):
            chunk = ", ".join(f'"{sid}"' for sid in sids[s : s + 10_000])  # hex: nothing to escape
            pks += [
                r["pk"]
                for r in client.query(
                    name, filter=f"sid in [{chunk}]", output_fields=["pk", "gen_to"]
                )
                if r["gen_to"] == LIVE
            ]
        return pks

    def _row(self, seg, sid: str, i: int, g: int) -> dict:
        return {
            "pk": f"{sid}@{g}",
            "sid": sid,
            "key": seg.key,
            "rel_path": seg.rel_path,
            "media_type": seg.media_type,
            "start_s": -1.0 if seg.start_s is None else float(seg.start_s),
            "end_s": -1.0 if seg.end_s is None else float(seg.end_s),
            "gen_from": g,
            "gen_to": LIVE,
            "vector": self._x[i],
        }

    def _attach(self, client, name: str, g: int, sids: list[str], dim: int) -> None:
        self.client, self.collection, self.rows, self.dim = client, name, len(sids), dim
        self._filter = f"gen_from <= {g} and gen_to > {g}"
        self._row_of = {sid: i for i, sid in enumerate(sids)}
        self._checked_at = time.monotonic()

    def check_rows(self) -> None:
        """The collection still holds exactly one row per segment of the opened generation
        (rows duplicated or deleted there after open would give duplicate hits or silent
        misses): an error naming the drift, checked at most every :data:`DRIFT_CHECK_S` s."""
        count = self.client.query(self.collection, filter=self._filter, output_fields=["count(*)"])[
            0
        ]["count(*)"]
        self._checked_at = time.monotonic()
        if count != self.rows:
            raise MediaRetrievalError(
                f"Milvus collection {self.collection} now holds {count} rows of this generation, "
                f"the index {self.rows}: it was changed outside this index; rebuild it "
                "(index.rebuild=true)"
            )

    @_engine_errors
    def activate(self, root: Path, generation: str) -> None:
        """Record the current generation, point the alias at this model's collection, and
        delete what no generation on disk can see any more."""
        g = generation_number(generation)
        client = _client(self.uri(root))
        base = self.options.milvus_collection
        name = self.collection or ""
        props = client.describe_collection(name).get("properties") or {}
        collections = client.list_collections()
        if any(base in client.list_aliases(c).get("aliases", []) for c in collections):
            client.alter_alias(name, base)
        else:
            client.create_alias(name, base)
        on_disk = {}  # generation number -> the collection of its model
        for folder in Path(root).glob("gen-*"):
            try:
                on_disk[generation_number(folder.name)] = collection_name(
                    base, _fingerprint_of(folder)
                )
            except MediaRetrievalError:  # not a generation, or one being removed: it uses nothing
                continue
        oldest = min((n for n, used in on_disk.items() if used == name), default=g)
        if (
            int(props.get("mr.oldest") or 0) != oldest
        ):  # a filtered delete scans: only when there is news
            client.delete(name, filter=f"gen_to <= {oldest}")
        client.alter_collection_properties(
            name, properties={"mr.current": str(g), "mr.pending": "0", "mr.oldest": str(oldest)}
        )
        owner = owner_id(root, create=False)
        for other in collections:
            if other.startswith(f"{base}_fp_") and other not in on_disk.values() and other != name:
                props = client.describe_collection(other).get("properties") or {}
                if props.get("mr.owner") == owner:  # never another index's collection
                    client.drop_collection(other)

    # ------------------------------------------------------------------ searching
    def save(self, folder: Path) -> None:
        """Nothing local: the collection is the backend (backend.json records the options)."""

    @_engine_errors
    def load(self, folder: Path, x: np.ndarray) -> None:
        """Open the model's collection at this generation and check it is this index's: its
        fingerprint, and one row for each of the generation's segments."""
        gen_dir = folder.parent
        root, g = gen_dir.parent, generation_number(gen_dir.name)
        fingerprint = _fingerprint_of(gen_dir)
        uri = self.uri(root)
        client = _client(uri)
        name = collection_name(self.options.milvus_collection, fingerprint)
        if not client.has_collection(name):
            raise ConfigError(
                f"Milvus collection {name} is missing at {uri}: rebuild the index "
                "(index.rebuild=true), or point index.options.milvus_uri at the right server"
            )
        props = client.describe_collection(name).get("properties") or {}
        if props.get("mr.fingerprint") != fingerprint:
            raise ConfigError(
                f"Milvus collection {name} at {uri} holds another model's embeddings (fingerprint "
                f"{props.get('mr.fingerprint')!r}, this index: {fingerprint!r}): "
                "rebuild the index (index.rebuild=true)"
            )
        sids = _table_sids(gen_dir)
        client.load_collection(name)
        self._attach(client, name, g, sids, int(x.shape[1]))
        count = client.query(name, filter=self._filter, output_fields=["count(*)"])[0]["count(*)"]
        if count != len(sids):
            raise ConfigError(
                f"Milvus collection {name} holds {count} rows of {gen_dir.name}, the index "
                f"{len(sids)}: it was changed outside this index; rebuild (index.rebuild=true)"
            )

    def _chunk(self) -> int:
        """Queries per request: 256 to a server; Milvus Lite (a local file) searches by brute
        force holding queries x rows x dim floats at once whatever the index type (10^5 rows of
        256-d: 100 MB per query; benchmarks/README.md), so it gets ~512 MB worth at a time."""
        if self.options.milvus_uri and "://" in self.options.milvus_uri:
            return 256
        return max(1, min(256, int(2**29 // (4 * max(self.rows, 1) * max(self.dim, 1)))))

    @_engine_errors
    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.client is not None, "load() or publish() first"
        if time.monotonic() - self._checked_at > DRIFT_CHECK_S:
            self.check_rows()
        q = np.asarray(q, dtype=np.float32)
        step = self._chunk()
        res = []
        extra = min(k, 16)  # room for duplicated rows, so k distinct segments still come back
        for s in range(0, len(q), step):
            res += self.client.search(
                self.collection,
                data=list(q[s : s + step]),
                limit=k + extra,
                filter=self._filter,
                output_fields=["sid"],
                search_params={"metric_type": "L2"},
            )
        dist = np.full((len(q), k), np.inf, dtype=np.float32)
        idx = np.full((len(q), k), -1, dtype=np.int64)
        for i, hits in enumerate(res):
            j, seen = 0, set()
            for hit in hits:
                row = self._row_of.get(str(hit["entity"]["sid"]), -1)
                if row < 0 or row in seen:  # a row this generation does not know, or a duplicate
                    continue
                seen.add(row)
                idx[i, j] = row
                dist[i, j] = float(np.sqrt(max(hit["distance"], 0.0)))  # L2 is squared
                j += 1
                if j == k:
                    break
        return dist, idx
