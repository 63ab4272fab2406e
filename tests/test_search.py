"""Index a mixed media folder and search it: incremental updates, resume after a kill,
DDP-sharded indexing, model checks, backends and atomic generations."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, compose_cfg, run_script, start_nodes
from helpers.media_library import CLASSES, make_library, write_image, write_video
from hydra.core.global_hydra import GlobalHydra

from media_retrieval.cli.index import run_index as index_from_cfg
from media_retrieval.cli.search import search
from media_retrieval.errors import ConfigError
from media_retrieval.retrieval.backends import PCAProjection, VectorSearcher
from media_retrieval.retrieval.index_store import IndexStore
from media_retrieval.retrieval.media_index import MediaIndex

# the no-training model (ImageNet Lite0, mean of frame features): appearance classes separate
MODEL = [
    "model.temporal.cell=none",
    "model.temporal.stats=[]",
    "clip.frames=4",
    "clip.image_size=64",
    "clip.chunk_s=2",
    "num_workers=0",
    "trainer.accelerator=cpu",
    "batch_size=4",
]


def index_overrides(media: Path, index: Path, extra: list[str] = ()) -> list[str]:
    return [f"media_dir={media}", f"index_dir={index}", *MODEL, *extra]


def run_index(media: Path, index: Path, tmp: Path, extra: list[str] = ()) -> dict:
    cfg = compose_cfg("index.yaml", index_overrides(media, index, extra), tmp)
    try:
        return index_from_cfg(cfg)
    finally:
        GlobalHydra.instance().clear()


def indexed_library(base: Path) -> tuple[Path, Path, dict]:
    """The mixed library under ``base/media``, indexed into ``base/index`` with the no-training
    model: (media, index, the files made per class)."""
    media, index = base / "media", base / "index"
    made = make_library(media)
    run_index(media, index, base / "run")
    return media, index, made


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("search")
    media, index = base / "media", base / "index"
    make_library(media)
    stats = run_index(media, index, base / "run")
    return media, index, stats


def _classes(hits) -> list[str]:
    return [Path(h.segment.rel_path).parts[0] for h in hits]


def test_index_skips_bad_files_and_chunks_long_videos(library):
    media, index, stats = library
    store = IndexStore(index)
    segs = store.segments()
    skipped = {Path(p).name for p, _ in store.skipped()}
    assert skipped == {"truncated.mp4", "empty.jpg", "notes.txt"}
    assert stats["files"] == len(CLASSES) * 5  # 3 videos + 2 images per class
    long_chunks = [s for s in segs if s.rel_path.endswith("_2.mp4")]
    assert len(long_chunks) == len(CLASSES) * 4  # 7 s at chunk_s=2 -> round(3.5) = 4 chunks
    assert all(s.start_s is not None and s.end_s > s.start_s for s in long_chunks)
    assert store.embeddings().shape == (len(segs), 1280)
    manifest = store.manifest()
    assert manifest["clip_spec"]["frames"] == 4 and len(manifest["fingerprint"]) == 24


@pytest.mark.parametrize("kind", ["video", "image"])
def test_query_by_video_and_image_returns_its_class(library, tmp_path, kind):
    _, index, _ = library
    s = MediaIndex(index)
    for ci, c in enumerate(CLASSES):  # new media, not in the index
        q = (
            write_video(tmp_path / f"q{ci}.mp4", c, 2.0, seed=999 + ci)
            if kind == "video"
            else write_image(tmp_path / f"q{ci}.png", c, seed=999 + ci)
        )
        hits = s.search_vectors(s.embed([str(q)]), k=5, delta=0.8)[0]
        assert _classes(hits) == [c] * 5, (q, _classes(hits))
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert all(a.distance <= b.distance for a, b in zip(hits, hits[1:], strict=False))
        assert all(h.kept == (h.cosine > 0.8) for h in hits)


def test_group_by_video_merges_chunks(library):
    media, index, _ = library
    s = MediaIndex(index)
    q = s.embed([str(media / "red_disc" / "clips" / "red_disc_2.mp4")])
    flat = s.search_vectors(q, k=8, delta=0.8)[0]
    grouped = s.search_vectors(q, k=8, delta=0.8, group_by="video")[0]
    assert len({h.segment.path for h in flat}) < len(flat)  # chunks of one video repeat
    paths = [h.segment.path for h in grouped]
    assert len(paths) == len(set(paths))
    long = next(h for h in grouped if h.segment.path.endswith("red_disc_2.mp4"))
    assert len(long.spans) == 4 and long.rank == 1


def test_search_cli_json_table_and_contact_sheet(library, tmp_path):
    media, index, _ = library
    q = media / "blue_stripes" / "blue_stripes_photo0.jpg"
    r = run_script(
        "search.py",
        [
            f"index_dir={index}",
            f"query={q}",
            "k=3",
            "output=json",
            f"sheet={tmp_path / 'sheet.png'}",
            f"paths.log_dir={tmp_path}",
        ],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out[0]["query"] == str(q) and len(out[0]["results"]) == 3
    assert out[0]["results"][0]["path"] == str(q) and out[0]["results"][0]["distance"] < 1e-4
    from PIL import Image

    with Image.open(tmp_path / "sheet.png") as im:
        assert im.width > 4 * 128 and im.height > 128
    # a folder of queries, table output
    qdir = tmp_path / "queries"
    write_image(qdir / "a.png", "green_checker", 5)
    write_video(qdir / "b.mp4", "red_disc", 1.0, 6)
    (qdir / "c.jpg").write_bytes(b"broken")
    r = run_script(
        "search.py", [f"index_dir={index}", f"query={qdir}", "k=2", f"paths.log_dir={tmp_path}"]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "a.png" in r.stdout and "b.mp4" in r.stdout and "kept" in r.stdout
    assert "skipping query" in r.stderr and "c.jpg" in r.stderr


def test_incremental_update_reembeds_only_changes(library, tmp_path):
    media0, index0, _ = library
    media, index = tmp_path / "media", tmp_path / "index"
    shutil.copytree(media0, media)
    shutil.copytree(index0, index)
    moved = run_index(media, index, tmp_path / "run0")  # same content under new paths
    assert moved["embedded"] == 0 and moved["reused"] == moved["segments"]
    before = IndexStore(index)
    old = {
        (s.rel_path, s.chunk): np.asarray(before.embeddings()[i])
        for i, s in enumerate(before.segments())
    }
    write_video(media / "green_checker" / "added.mp4", "green_checker", 1.5, seed=77)  # new
    write_image(media / "red_disc" / "red_disc_photo1.png", "red_disc", seed=78)  # changed content
    os.remove(media / "blue_stripes" / "clips" / "blue_stripes_0.mp4")  # deleted
    stats = run_index(media, index, tmp_path / "run")
    assert stats["embedded"] == 2 and stats["removed"] == 1
    after = IndexStore(index)
    segs = after.segments()
    rel = [s.rel_path for s in segs]
    assert "green_checker/added.mp4" in rel and "blue_stripes/clips/blue_stripes_0.mp4" not in rel
    vecs = after.embeddings()
    for i, s in enumerate(segs):
        if s.rel_path in ("green_checker/added.mp4", "red_disc/red_disc_photo1.png"):
            continue
        np.testing.assert_array_equal(vecs[i], old[s.rel_path, s.chunk])  # reused, not recomputed
    changed = rel.index("red_disc/red_disc_photo1.png")
    assert not np.allclose(vecs[changed], old["red_disc/red_disc_photo1.png", 0])
    assert len(list(index.glob("gen-*"))) == 1 and not (index / "work").exists()


def test_index_built_by_another_model_is_refused(library, tmp_path):
    media, index, _ = library
    with pytest.raises(ConfigError, match="another model or preprocessing"):
        run_index(media, index, tmp_path, ["clip.frames=2"])
    # the search side: a checkpoint other than the index's own
    import lightning as L

    from media_retrieval.models import CNNLSTM

    L.seed_everything(0)
    other = CNNLSTM(
        backbone={"name": "efficientnet_lite0", "weights": "none"},
        temporal={"cell": "gru", "hidden": 8},
        num_classes=2,
    )
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=0)
    trainer.strategy.connect(other)
    trainer.save_checkpoint(tmp_path / "other.ckpt")
    cfg = compose_cfg(
        "search.yaml",
        [
            f"index_dir={index}",
            f"query={media / 'red_disc' / 'red_disc_photo0.jpg'}",
            f"ckpt_path={tmp_path / 'other.ckpt'}",
        ],
        tmp_path,
    )
    with pytest.raises(ConfigError, match="not the model this index was built with"):
        search(cfg)
    GlobalHydra.instance().clear()


def test_failed_generation_write_keeps_the_old_index(library, tmp_path, monkeypatch):
    media0, index0, _ = library
    index = tmp_path / "index"
    shutil.copytree(index0, index)
    before = (index / "CURRENT").read_text()
    write_image(tmp_path / "m" / "x" / "new.png", "red_disc", 3)

    def boom(self, folder):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VectorSearcher, "save", boom)
    from media_retrieval.errors import MediaRetrievalError

    with pytest.raises(
        MediaRetrievalError, match="No space left on device.*live index is unchanged"
    ):
        run_index(media0, index, tmp_path / "run", ["index.rebuild=true", "clip.frames=2"])
    assert (index / "CURRENT").read_text() == before
    assert len(IndexStore(index).segments()) == len(IndexStore(index0).segments())
    MediaIndex(index)  # still opens


def _index_cmd(media: Path, index: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "src" / "index.py"),
        *index_overrides(media, index, extra),
        f"hydra.run.dir={index.parent / 'hydra'}",
    ]


@pytest.mark.slow
def test_killed_build_resumes_to_the_same_index(library, tmp_path):
    media, _, _ = library
    slow = [
        "clip.frames=16",
        "clip.image_size=160",
        "batch_size=1",
    ]  # ~0.2 s per segment
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _index_cmd(media, killed, slow),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while time.time() < deadline and len(list((killed / "work").glob("*/shard-*.keys.json"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert IndexStore(killed).current() is None  # nothing half-built is visible
    n_done = len(list((killed / "work").glob("*/shard-*.keys.json")))
    assert n_done >= 5
    r = subprocess.run(
        _index_cmd(media, killed, slow),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{n_done} from an interrupted build" in r.stdout + r.stderr
    full = tmp_path / "full"
    run_index(media, full, tmp_path / "run", slow)
    a, b = IndexStore(killed), IndexStore(full)
    assert [s.key for s in a.segments()] == [s.key for s in b.segments()]
    np.testing.assert_allclose(a.embeddings(), b.embeddings(), atol=1e-6)


@pytest.mark.slow
def test_ddp_sim_index_matches_one_process(library, tmp_path):
    """Same threads per process and batch_size=1 on both sides: 2 ranks batch different clips
    together, and CPU convolutions vary with batch composition and thread count at ~1e-5
    (docs/search.md). Lightning gives each of 2 CPU ranks 1 thread; OMP_NUM_THREADS=1 does that
    for the one-process run."""
    media, _, _ = library
    index, ddp = tmp_path / "one", tmp_path / "ddp"
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    for out, extra in ((index, []), (ddp, ["trainer=ddp_sim"])):
        r = subprocess.run(
            _index_cmd(media, out, [*extra, "batch_size=1"]),
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = IndexStore(index), IndexStore(ddp)
    assert [s.key for s in a.segments()] == [s.key for s in b.segments()]
    assert [s.path for s in a.segments()] == [s.path for s in b.segments()]
    np.testing.assert_allclose(a.embeddings(), b.embeddings(), atol=1e-6)


# ---------------------------------------------------------------------- backends


def clustered(
    n: int, d: int, classes: int, noise: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (classes, d)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    return centers[labels] + noise * rng.normal(0, 1, (n, d)).astype(np.float32), labels


@pytest.mark.parametrize(
    "backend,min_recall", [("flat", 1.0), ("ivf", 0.9), ("hnsw", 0.9), ("ivfpq", 0.5)]
)
def test_backends_agree_with_exact(backend, min_recall, tmp_path):
    x, _ = clustered(4000, 32, 20, 0.3)
    q = x[:50] + 0.01
    exact = VectorSearcher.build(x, "exact")
    d0, c0, i0 = exact.search(q, 10)
    s = VectorSearcher.build(x, backend, {"nlist": 32, "nprobe": 8, "pq_m": 8})
    d, c, i = s.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, i0, strict=True)])
    assert recall >= min_recall
    # reported scores are exact, whatever proposed the candidates
    np.testing.assert_allclose(d, np.linalg.norm(x[i] - q[:, None], axis=-1), rtol=1e-4, atol=1e-4)
    assert (np.diff(d, axis=1) >= -1e-6).all()
    s.save(tmp_path / "b")
    again = VectorSearcher.load(tmp_path / "b", x)
    np.testing.assert_array_equal(again.search(q, 10)[2], i)


def test_kmeans_prefilter_and_pca(tmp_path):
    x, labels = clustered(3000, 64, 10, 0.5)
    q = x[:40]
    i0 = VectorSearcher.build(x, "exact").search(q, 10)[2]
    km = VectorSearcher.build(x, "exact", {"kmeans_clusters": 20, "kmeans_probe": 4})
    i1 = km.search(q, 10)[2]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i1, i0, strict=True)]) >= 0.9
    km.save(tmp_path / "km")
    np.testing.assert_array_equal(VectorSearcher.load(tmp_path / "km", x).search(q, 10)[2], i1)
    pca = PCAProjection.fit(x, variance=0.9)
    full = PCAProjection.fit(x, dim=64)
    ratio = np.cumsum(full.explained)
    assert ratio[pca.dim - 1] >= 0.9 > ratio[pca.dim - 2]  # the smallest dimension reaching 90 %
    p = VectorSearcher.build(x, "exact", pca_variance=0.9)
    assert p.pca.dim == pca.dim < 64
    i2 = p.search(q, 10)[2]
    assert np.mean(labels[i2] == labels[:40, None]) >= 0.95
    with pytest.raises(ConfigError, match="pca.variance"):
        PCAProjection.fit(x, variance=1.5)


def _nodes(media: Path, index: Path, extra: list[str]) -> list[subprocess.Popen]:
    """The index command on two stand-in nodes (conftest.start_nodes)."""
    return start_nodes(
        _index_cmd(
            media,
            index,
            [
                "trainer=ddp",
                "trainer.accelerator=cpu",
                "trainer.devices=1",
                "trainer.num_nodes=2",
                "batch_size=1",
                *extra,
            ],
        )
    )


@pytest.mark.slow
def test_two_node_index_resumes_after_a_node_dies_and_matches_one_process(library, tmp_path):
    """trainer.num_nodes=2: each node embeds its shard into the shared index folder, rank 0
    assembles. Node 1 is killed mid-build (node 0 then waits on it and is stopped too); the
    same two commands again resume from the finished batches and give the one-process index."""
    media, _, _ = library
    index = tmp_path / "two-nodes"
    slow = [
        "clip.frames=16",
        "clip.image_size=160",
    ]  # ~0.2 s per segment: time to kill mid-way
    nodes = _nodes(media, index, slow)
    deadline = time.time() + 180
    while time.time() < deadline and len(list((index / "work").glob("*/shard-*.keys.json"))) < 4:
        time.sleep(0.05)
    nodes[1].kill()
    nodes[1].wait()
    time.sleep(1)
    nodes[0].kill()  # it would wait for node 1 in the next collective
    nodes[0].wait()
    assert IndexStore(index).current() is None  # nothing half-built is visible
    done = len(list((index / "work").glob("*/shard-*.keys.json")))
    assert done >= 4
    nodes = _nodes(media, index, slow)
    outs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "from an interrupted build" in outs[0]
    one = tmp_path / "one"
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        _index_cmd(media, one, [*slow, "batch_size=1"]),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = IndexStore(index), IndexStore(one)
    assert [s.key for s in a.segments()] == [s.key for s in b.segments()]
    np.testing.assert_allclose(a.embeddings(), b.embeddings(), atol=1e-5)


def test_backends_are_one_registry_the_config_check_and_the_index_store_agree_with():
    """`index.backend` is validated before torch loads (config.index.BACKENDS) and built from the
    registry: the two name the same backends. The index store asks a backend's class what it
    needs (local files, folder entries, recorded options) and names none itself."""
    import ast

    from media_retrieval.config.index import BACKENDS
    from media_retrieval.retrieval import backends, index_store

    assert sorted(BACKENDS) == sorted(backends._BACKEND_TYPES)
    assert set(backends.backend_folder_entries()) == {"milvus.db", "milvus-owner"}
    assert not backends.backend_type("milvus").parses_local_files
    assert all(backends.backend_type(b).parses_local_files for b in BACKENDS if b != "milvus")
    with pytest.raises(
        ConfigError, match="index.backend='annoy'; valid: exact, flat, hnsw, ivf, ivfpq, milvus"
    ):
        backends.backend_type("annoy")
    strings = [
        n.value
        for n in ast.walk(ast.parse(Path(index_store.__file__).read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    assert not [s for s in strings if s in BACKENDS], "index_store names a backend"
