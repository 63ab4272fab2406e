"""``index.backend=milvus`` on Milvus Lite (a local file, no server): the same top-k as exact
search, incremental updates as new collections switched by alias, a reader keeping its
generation through a rebuild, a foreign collection refused, and the command line and the
service on top."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.media_library import CLASSES, make_library, write_video

pytest.importorskip("pymilvus", reason="pymilvus is a dev dependency (make env)")
pytest.importorskip("milvus_lite", reason="milvus-lite is a dev dependency (make env)")

from media_retrieval.data.clips import ClipSpec  # noqa: E402
from media_retrieval.errors import ConfigError  # noqa: E402
from media_retrieval.retrieval.indexer import IndexOptions  # noqa: E402
from media_retrieval.retrieval.media_index import MediaIndex, default_model  # noqa: E402
from media_retrieval.retrieval.milvus import LITE_FILE, collection_name  # noqa: E402

SPEC = ClipSpec(frames=4, image_size=64, chunk_s=2)
OPTS = {"num_workers": 0, "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}}


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


def build(media: Path, index: Path, model, backend: str = "milvus") -> MediaIndex:
    return MediaIndex.build(media, index, model, clip_spec=SPEC, options=IndexOptions(backend=backend, **OPTS))


def test_same_hits_as_exact_and_the_collection_describes_the_index(library, model, tmp_path):
    media, made = library
    with build(media, tmp_path / "exact", model, "exact") as exact, build(media, tmp_path / "mv", model) as mv:
        for c in CLASSES:
            q = made[c][0]
            assert [h.key for h in mv.search(q, k=5)] == [h.key for h in exact.search(q, k=5)]
        c = client(tmp_path / "mv")
        name = collection_name("media_retrieval", mv.generation)
        props = c.describe_collection(name)["properties"]
        assert props["mr.fingerprint"] == mv.manifest["fingerprint"] and props["mr.generation"] == mv.generation
        assert "media_retrieval" in c.list_aliases(name)["aliases"]
        rows = c.query(name, filter="row >= 0", output_fields=["row", "key", "rel_path", "start_s", "end_s"])
        assert len(rows) == len(mv.segments)
        for r in rows:  # the metadata search needs, per row of the segment table
            seg = mv.segments[r["row"]]
            assert (r["key"], r["rel_path"]) == (seg.key, seg.rel_path)
            assert r["start_s"] == (-1.0 if seg.start_s is None else pytest.approx(seg.start_s))
            assert not r["rel_path"].startswith("/") and ".." not in Path(r["rel_path"]).parts


def test_updates_switch_the_alias_and_a_reader_keeps_its_generation(library, model, tmp_path):
    media, made = library
    index = tmp_path / "mv"
    build(media, index, model).close()
    reader = MediaIndex.open(index)
    first = reader.generation
    q = made[CLASSES[0]][0]
    before = [h.key for h in reader.search(q, k=3)]
    # add, change, delete, move
    added = write_video(media / "new" / "added.mp4", CLASSES[1], 1.0, seed=77)
    write_video(made[CLASSES[2]][0], CLASSES[0], 1.0, seed=78)  # same path, new content
    made[CLASSES[2]][1].unlink()
    moved_from = made[CLASSES[1]][0]
    moved_to = media / "moved" / moved_from.name
    moved_to.parent.mkdir()
    shutil.move(moved_from, moved_to)
    with build(media, index, model) as updated:
        assert updated.generation != first
        assert [h.key for h in reader.search(q, k=3)] == before  # the reader still answers from its generation
        c = client(index)
        assert "media_retrieval" in c.list_aliases(collection_name("media_retrieval", updated.generation))["aliases"]
        rels = {s.rel_path for s in updated.segments}
        assert "new/added.mp4" in rels and f"moved/{moved_from.name}" in rels
        assert made[CLASSES[2]][1].relative_to(media).as_posix() not in rels
        assert updated.search(added, k=1)[0].rel_path == "new/added.mp4"
        n = c.get_collection_stats(collection_name("media_retrieval", updated.generation))["row_count"]
        assert n == len(updated.segments)
    assert reader.reload() and reader.generation != first
    reader.close()
    build(media, index, model).close()  # the old generation has no reader now: folder and collection go
    assert not c.has_collection(collection_name("media_retrieval", first))


def test_a_collection_with_another_fingerprint_is_refused(library, model, tmp_path):
    media, _ = library
    with build(media, tmp_path / "mv", model) as mv:
        name = collection_name("media_retrieval", mv.generation)
    client(tmp_path / "mv").alter_collection_properties(name, properties={"mr.fingerprint": "someone-else"})
    with pytest.raises(ConfigError, match="another model's embeddings"):
        MediaIndex.open(tmp_path / "mv")


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
    cfg = compose_cfg("search.yaml", [f"index_dir={tmp_path / 'idx'}", f"query={query}", "output=json", "k=3"],
                      tmp_path / "s")
    try:
        results = search(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert results[0]["results"][0]["rel_path"] == query.relative_to(media).as_posix()
    with TestClient(create_app(ServiceSettings(index_dir=str(tmp_path / "idx")))) as c:
        r = c.post("/search", params={"path": query.relative_to(media).as_posix(), "k": 3})
        assert r.status_code == 200 and r.json()["hits"][0]["rel_path"] == query.relative_to(media).as_posix()


def test_bad_milvus_options_are_one_line():
    from media_retrieval.retrieval.backends import BackendOptions

    with pytest.raises(ConfigError, match="milvus_collection"):
        BackendOptions.from_dict({"milvus_collection": "bad-name; drop"})
    with pytest.raises(ConfigError, match="milvus_index"):
        BackendOptions.from_dict({"milvus_index": "MAGIC"})
