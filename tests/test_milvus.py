"""``index.backend=milvus`` on Milvus Lite (a local file, no server): the same top-k as exact
search, an update that writes only the changed rows while a reader keeps searching its own
generation, a crashed update undone by the next, a foreign collection refused, and the command
line and the service on top."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from helpers.media_library import CLASSES, make_library, write_video

pytest.importorskip("pymilvus", reason="pymilvus is a dev dependency (make env)")
pytest.importorskip("milvus_lite", reason="milvus-lite is a dev dependency (make env)")

from media_retrieval.data.clips import ClipSpec  # noqa: E402
from media_retrieval.errors import ConfigError  # noqa: E402
from media_retrieval.retrieval.indexer import IndexOptions  # noqa: E402
from media_retrieval.retrieval.media_index import MediaIndex, default_model  # noqa: E402
from media_retrieval.retrieval.milvus import LITE_FILE, LIVE, collection_name, segment_id  # noqa: E402

SPEC = ClipSpec(frames=4, image_size=64, chunk_s=2)
OPTS = {
    "num_workers": 0,
    "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
}


def client(index_dir: Path):
    from pymilvus import MilvusClient

    return MilvusClient(str(index_dir / LITE_FILE))


@pytest.fixture(scope="module")
def model():
    return default_model()


@pytest.fixture
def library(tmp_path):
    made = make_library(tmp_path / "media", long_s=3.0)
    return tmp_path / "media", made


def build(
    media: Path, index: Path, model, backend: str = "milvus", **backend_options
) -> MediaIndex:
    return MediaIndex.build(
        media,
        index,
        model,
        clip_spec=SPEC,
        options=IndexOptions(backend=backend, backend_options=backend_options, **OPTS),
    )


def rows(index_dir: Path, fingerprint: str, filter: str = "gen_to > 0") -> list[dict]:  # noqa: A002
    return client(index_dir).query(
        collection_name("media_retrieval", fingerprint),
        filter=filter,
        output_fields=["pk", "sid", "key", "rel_path", "start_s", "gen_from", "gen_to"],
    )


def sids(index: MediaIndex) -> set[str]:
    return {segment_id(s.key, s.rel_path, s.start_s, s.end_s) for s in index.segments}


def test_same_hits_as_exact_and_the_collection_describes_the_index(library, model, tmp_path):
    media, made = library
    with (
        build(media, tmp_path / "exact", model, "exact") as exact,
        build(media, tmp_path / "mv", model) as mv,
    ):
        for c in CLASSES:
            q = made[c][0]
            assert [h.key for h in mv.search(q, k=5)] == [h.key for h in exact.search(q, k=5)]
        c = client(tmp_path / "mv")
        name = collection_name("media_retrieval", mv.manifest["fingerprint"])
        props = c.describe_collection(name)["properties"]
        assert props["mr.fingerprint"] == mv.manifest["fingerprint"] and props["mr.current"] == "1"
        assert "media_retrieval" in c.list_aliases(name)["aliases"]
        got = rows(tmp_path / "mv", mv.manifest["fingerprint"])
        assert len(got) == len(mv.segments) and {r["sid"] for r in got} == sids(mv)
        by_sid = {segment_id(s.key, s.rel_path, s.start_s, s.end_s): s for s in mv.segments}
        for r in got:  # the metadata search needs, per segment, and one version each
            seg = by_sid[r["sid"]]
            assert (r["key"], r["rel_path"], r["gen_from"], r["gen_to"]) == (
                seg.key,
                seg.rel_path,
                1,
                LIVE,
            )
            assert r["start_s"] == (-1.0 if seg.start_s is None else pytest.approx(seg.start_s))
            assert not r["rel_path"].startswith("/") and ".." not in Path(r["rel_path"]).parts
        # what the engine says of a path is never used: hits come from the index's own segment table
        c.upsert(name, [{"pk": got[0]["pk"], "rel_path": "../../etc/passwd"}], partial_update=True)
    with MediaIndex.open(tmp_path / "mv") as reopened:
        for cls in CLASSES:
            assert all(
                h.rel_path in {s.rel_path for s in reopened.segments}
                for h in reopened.search(made[cls][0], k=5)
            )


def change_library(media: Path, made: dict) -> Path:
    """Add, change, delete and move one file each; returns the added one."""
    added = write_video(media / "new" / "added.mp4", CLASSES[1], 1.0, seed=77)
    write_video(made[CLASSES[2]][0], CLASSES[0], 1.0, seed=78)  # same path, new content
    made[CLASSES[2]][1].unlink()
    moved_from = made[CLASSES[1]][0]
    (media / "moved").mkdir()
    shutil.move(moved_from, media / "moved" / moved_from.name)
    return added


def test_an_update_writes_only_the_changed_rows_while_a_reader_searches(library, model, tmp_path):
    media, made = library
    index = tmp_path / "mv"
    build(media, index, model).close()
    reader = MediaIndex.open(index)
    fp = reader.manifest["fingerprint"]
    q = made[CLASSES[0]][0]
    before = [h.key for h in reader.search(q, k=3)]
    added = change_library(media, made)
    seen, stop = [], threading.Event()

    def search_while_building() -> None:
        while not stop.is_set():
            seen.append([h.key for h in reader.search(q, k=3)])

    thread = threading.Thread(target=search_while_building)
    thread.start()
    try:
        updated = build(media, index, model)
    finally:
        stop.set()
        thread.join()
    with updated:
        assert updated.generation == "gen-000002" and seen and all(s == before for s in seen)
        old, new = sids(reader), sids(updated)
        assert 0 < len(new - old) < len(new)  # something, but not everything, changed
        got = rows(index, fp)
        inserted = {r["sid"] for r in got if r["gen_from"] == 2}
        retired = {r["sid"] for r in got if r["gen_to"] == 2}
        untouched = {r["sid"] for r in got if r["gen_from"] == 1 and r["gen_to"] == LIVE}
        assert inserted == new - old and retired == old - new and untouched == old & new
        rels = {s.rel_path for s in updated.segments}
        assert "new/added.mp4" in rels and f"moved/{made[CLASSES[1]][0].name}" in rels
        assert made[CLASSES[2]][1].relative_to(media).as_posix() not in rels
        assert updated.search(added, k=1)[0].rel_path == "new/added.mp4"
    assert [h.key for h in reader.search(q, k=3)] == before  # still its own generation
    assert reader.reload() and reader.generation == "gen-000002"
    reader.close()
    write_video(media / "new" / "second.mp4", CLASSES[0], 1.0, seed=79)
    with build(media, index, model) as third:  # gen 1 has no reader: its retired rows go
        got = rows(index, fp)
        assert len(got) == len(third.segments) and {r["sid"] for r in got} == sids(third)


def test_a_crashed_publish_is_undone_by_the_next(library, model, tmp_path, monkeypatch):
    from pymilvus import MilvusClient

    from media_retrieval.errors import MediaRetrievalError

    media, made = library
    index = tmp_path / "mv"
    with build(media, index, model) as first:
        fp = first.manifest["fingerprint"]
    reader = MediaIndex.open(index)
    q = made[CLASSES[0]][0]
    before = [h.key for h in reader.search(q, k=3)]
    change_library(media, made)
    upsert = MilvusClient.upsert

    def upsert_then_die(self, name, data, **kw):  # the retirements land, then the machine goes
        out = upsert(self, name, data, **kw)
        if any(d.get("gen_to") != LIVE for d in data):
            raise RuntimeError("node lost")
        return out

    monkeypatch.setattr(MilvusClient, "upsert", upsert_then_die)
    with pytest.raises(MediaRetrievalError, match="live index is unchanged"):
        build(media, index, model)
    assert not (index / "gen-000002").exists()
    assert [h.key for h in reader.search(q, k=3)] == before
    assert any(r["gen_from"] == 2 for r in rows(index, fp)) and any(
        r["gen_to"] == 2 for r in rows(index, fp)
    )
    monkeypatch.setattr(MilvusClient, "upsert", upsert)
    reader.close()
    client(index).release_collection(
        collection_name("media_retrieval", fp)
    )  # as a new process finds it
    with build(media, index, model) as second:
        assert second.generation == "gen-000002"
        visible = rows(index, fp, "gen_from <= 2 and gen_to > 2")
        assert len(visible) == len(second.segments) and {r["sid"] for r in visible} == sids(second)
        assert len(rows(index, fp)) == len(
            second.segments
        )  # gen 1 had no reader left: its rows went


def test_a_collection_changed_elsewhere_or_owned_by_another_index_is_refused(
    library, model, tmp_path
):
    media, _ = library
    with build(media, tmp_path / "mv", model) as mv:
        name = collection_name("media_retrieval", mv.manifest["fingerprint"])
    c = client(tmp_path / "mv")
    c.delete(name, ids=[c.query(name, filter="gen_to > 0", output_fields=["pk"], limit=1)[0]["pk"]])
    with pytest.raises(ConfigError, match="changed outside this index"):
        MediaIndex.open(tmp_path / "mv")
    c.alter_collection_properties(name, properties={"mr.fingerprint": "someone-else"})
    with pytest.raises(ConfigError, match="another model's embeddings"):
        MediaIndex.open(tmp_path / "mv")
    shared = {"milvus_uri": str(tmp_path / "shared.db")}
    build(media, tmp_path / "a", model, **shared).close()
    with pytest.raises(ConfigError, match="belongs to another index folder"):
        build(media, tmp_path / "b", model, **shared)
    (tmp_path / "a" / "milvus-owner").write_text("x" * 10_000)  # an index's files are data
    with pytest.raises(ConfigError, match="milvus-owner is damaged"):
        build(media, tmp_path / "a", model, **shared)


def test_command_line_and_service_on_milvus(library, tmp_path):
    from conftest import compose_cfg
    from fastapi.testclient import TestClient
    from hydra.core.global_hydra import GlobalHydra
    from test_search import run_index

    from media_retrieval.cli.search import search
    from media_retrieval.serve.app import ServiceSettings, create_app

    media, made = library
    stats = run_index(media, tmp_path / "idx", tmp_path / "run", ["index.backend=milvus"])
    assert stats["segments"] > 0
    query = made[CLASSES[2]][0]
    cfg = compose_cfg(
        "search.yaml",
        [f"index_dir={tmp_path / 'idx'}", f"query={query}", "output=json", "k=3"],
        tmp_path / "s",
    )
    try:
        results = search(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert results[0]["results"][0]["rel_path"] == query.relative_to(media).as_posix()
    with TestClient(
        create_app(ServiceSettings(index_dir=str(tmp_path / "idx"))), base_url="http://127.0.0.1"
    ) as c:
        r = c.post("/search", params={"path": query.relative_to(media).as_posix(), "k": 3})
        assert (
            r.status_code == 200
            and r.json()["hits"][0]["rel_path"] == query.relative_to(media).as_posix()
        )


def test_bad_milvus_options_are_one_line():
    from media_retrieval.retrieval.backends import BackendOptions

    with pytest.raises(ConfigError, match="milvus_collection"):
        BackendOptions.from_dict({"milvus_collection": "bad-name; drop"})
    with pytest.raises(ConfigError, match="milvus_index"):
        BackendOptions.from_dict({"milvus_index": "MAGIC"})
