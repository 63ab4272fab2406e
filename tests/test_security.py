"""Security and integrity (issue 12): a hostile index runs nothing and opens nothing outside its
folder and media root, builds never lose files, content identity is exact, single bad files are
skipped, full disks keep the last good state, and every user error is one line.

Each test names the numbered case of docs/reliability.md's fault matrix it covers."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_cfg, run_script, tiny_overrides
from helpers.index_files import TINY_MODEL, index_folder
from helpers.index_files import live_generation as _gen
from helpers.index_files import resign as _resign
from helpers.media_library import make_library, write_image, write_video
from hydra.core.global_hydra import GlobalHydra

from media_retrieval.errors import ConfigError, DataError, MediaRetrievalError
from media_retrieval.retrieval.index_store import IndexStore
from media_retrieval.retrieval.media_index import MediaIndex

MODEL = TINY_MODEL
_index = index_folder


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sec")
    make_library(base / "media")
    _index(base / "media", base / "index", base / "run", ["index.backend=hnsw"])
    return base / "media", base / "index"


@pytest.fixture
def index(built, tmp_path) -> Path:
    """A private copy of the built index (its media root stays the fixture's)."""
    copy = tmp_path / "index"
    shutil.copytree(built[1], copy)
    return copy


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _query(media: Path) -> Path:
    return media / "red_disc" / "red_disc_photo0.jpg"


# ---------------------------------------------------------------------- 1. code execution
_OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # records only; tests read and clear _OPENED


def _plant(kind: str, gen: Path, index: Path, outside: Path, marker: Path) -> str:
    """Plant one payload in a generation; returns the message the refusal must contain."""
    if kind == "model_class":
        spec = json.loads((gen / "model.json").read_text())
        spec["class"], spec["hparams"] = "subprocess.Popen", {"args": ["touch", str(marker)]}
        (gen / "model.json").write_text(json.dumps(spec))
        _resign(gen)
        return "is not a registered model"
    if kind == "model_args":
        spec = json.loads((gen / "model.json").read_text())
        spec["hparams"]["backbone"]["weights"] = str(outside / "secret.pth")
        spec["hparams"]["_target_"] = "os.system"
        (gen / "model.json").write_text(json.dumps(spec))
        _resign(gen)
        return "does not take"
    if kind == "npy_pickle":
        np.save(gen / "embeddings.npy", np.array([Evil(marker)], dtype=object), allow_pickle=True)
        _resign(gen)
        return "embeddings.npy cannot be read"
    if kind == "json":
        (gen / "model.json").write_text(
            '{"class": "media_retrieval.models.cnn_lstm.CNNLSTM", "hparams": '
        )
        return "model.json has the wrong size"
    if kind == "npz_pickle":  # a PCA file with a pickled payload, checksums rewritten
        np.savez(gen / "search" / "pca.npz", mean=np.array([Evil(marker)], dtype=object))
        _resign(gen)
        return ""  # untrusted: rebuilt from the vectors, the file is never parsed
    if kind == "model_pt":  # a legacy pickle checkpoint beside the weights
        with open(gen / "model.pt", "wb") as fh:
            pickle.dump(Evil(marker), fh)
        return "unexpected ['model.pt']"
    if kind == "faiss":
        (gen / "search" / "faiss.index").write_bytes(os.urandom(4096))
        _resign(gen)
        return ""  # untrusted: rebuilt from the checked vectors, never parsed by FAISS
    if kind == "current":
        other = outside / "gen-000001"
        shutil.copytree(gen, other)
        (index / "CURRENT").write_text("../outside/gen-000001")
        return "not a generation inside index_dir"
    if kind == "current_link":
        shutil.rmtree(gen)
        shutil.copytree(_gen_src(index), outside / "linked")
        os.symlink(outside / "linked", gen)
        return "not a folder inside index_dir"
    if kind == "segment_path":
        con = sqlite3.connect(gen / "metadata.sqlite")
        con.execute(
            "UPDATE segments SET path = ?, rel_path = ? WHERE row = 0",
            (str(outside / "secret.mp4"), "../../outside/secret.mp4"),
        )
        con.commit()
        con.close()
        _resign(gen)
        return "outside the media root"
    raise AssertionError(kind)


def _gen_src(index: Path) -> Path:
    return index.parent / "pristine"


PAYLOADS = [
    "model_class",
    "model_args",
    "npy_pickle",
    "json",
    "npz_pickle",
    "model_pt",
    "faiss",
    "current",
    "current_link",
    "segment_path",
]


@pytest.mark.parametrize("kind", PAYLOADS)
def test_hostile_index_runs_nothing_and_reads_nothing_outside(kind, built, index, tmp_path):
    """Case 1 and 3: payloads in every file of a generation. Nothing runs (marker files), the
    secret files planted outside index_dir and the media root are never opened, and the index
    is refused with one line or searched as if the payload were not there."""
    media = built[0]
    outside = index.parent / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"secret")
    (outside / "secret.pth").write_bytes(b"secret")
    marker = tmp_path / "payload_ran"
    shutil.copytree(_gen(index), _gen_src(index))
    gen = _gen(index)
    expect = _plant(kind, gen, index, outside, marker)
    _OPENED.clear()
    if expect:
        with pytest.raises(DataError, match=expect.replace("[", r"\[").replace("]", r"\]")) as err:
            s = MediaIndex(index)
            s.search_vectors(s.embed([str(_query(media))]), k=3, delta=0.8)
        assert "\n" not in str(err.value)
    else:
        s = MediaIndex(
            index
        )  # checksums were rewritten: untrusted, its search files are never parsed
        hits = s.search_vectors(s.embed([str(_query(media))]), k=3, delta=0.8)[0]
        assert hits[0].segment.rel_path == "red_disc/red_disc_photo0.jpg"
    opened = list(_OPENED)
    assert not marker.exists()
    assert not any(str(outside) in p for p in opened), [p for p in opened if str(outside) in p]


def test_an_index_built_here_loads_its_faiss_file_and_a_foreign_one_does_not(
    built, index, monkeypatch, tmp_path
):
    import faiss

    media = built[0]
    parsed = []
    real = faiss.read_index
    monkeypatch.setattr(faiss, "read_index", lambda path, *a: parsed.append(path) or real(path, *a))
    s = MediaIndex(index)  # built by this machine (recorded in the trust store)
    assert len(parsed) == 1 and parsed[0].endswith("faiss.index")
    expected = [h.segment.key for h in s.search_vectors(s.embed([str(_query(media))]), 5, 0.8)[0]]
    monkeypatch.setenv("MEDIA_RETRIEVAL_TRUST_STORE", str(tmp_path / "empty.txt"))
    s = MediaIndex(
        index
    )  # from elsewhere: rebuilt from the checked vectors, the file is not parsed
    assert len(parsed) == 1
    assert [
        h.segment.key for h in s.search_vectors(s.embed([str(_query(media))]), 5, 0.8)[0]
    ] == expected
    # index.trusted=true parses the file even then; a damaged one is one clear error
    (_gen(index) / "search" / "faiss.index").write_bytes(os.urandom(4096))
    _resign(_gen(index))
    with pytest.raises(DataError, match="search/ cannot be loaded"):
        MediaIndex(index, trusted=True)


@pytest.mark.parametrize(
    "damage",
    ["reversed", "truncated", "nan", "npy_shape", "sqlite", "sqlite_wal", "manifest", "weights"],
)
def test_corrupt_index_files_are_one_clear_error_and_a_rebuild_recovers(
    damage, built, index, tmp_path
):
    """Case 3 and 6: altered embeddings (rows reversed, truncated, NaN), and corrupt sqlite,
    manifest, weights: refused with one line naming the file, before any search."""
    media = built[0]
    gen = _gen(index)
    x = np.load(gen / "embeddings.npy")
    if damage == "reversed":
        np.save(gen / "embeddings.npy", x[::-1])
        expect = "embeddings.npy does not match its SHA-256"
    elif damage == "truncated":
        data = (gen / "embeddings.npy").read_bytes()
        (gen / "embeddings.npy").write_bytes(data[: len(data) // 2])
        expect = "embeddings.npy has the wrong size"
    elif damage == "nan":  # with checksums rewritten: the values themselves are checked
        x[3] = np.nan
        np.save(gen / "embeddings.npy", x)
        _resign(gen)
        expect = "non-finite"
    elif damage == "npy_shape":
        np.save(gen / "embeddings.npy", x[:-2])
        _resign(gen)
        expect = r"manifest says float32"
    elif damage in ("sqlite", "sqlite_wal"):
        # a fixed damaged header; bytes 18-19 (write/read version) are 1 (rollback journal) or, as
        # an explicit case, 2 (WAL: a writable open would leave -wal/-shm files beside it)
        body = bytearray(np.random.default_rng(0).bytes(2000))
        body[2:4] = b"\x02\x02" if damage == "sqlite_wal" else b"\x01\x01"
        (gen / "metadata.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(body))
        _resign(gen)
        expect = "metadata.sqlite"
    elif damage == "manifest":
        (gen / "manifest.json").write_text("{not json")
        expect = "manifest.json cannot be read"
    else:
        (gen / "model.safetensors").write_bytes(os.urandom(300))
        _resign(gen)
        expect = "model.safetensors cannot be read"
    files_before = sorted(p.name for p in gen.iterdir())
    with pytest.raises(DataError, match=expect) as err:
        MediaIndex(index)
    assert "\n" not in str(err.value) and "rebuild" in str(err.value)
    assert (
        sorted(p.name for p in gen.iterdir()) == files_before
    )  # a read-only open writes nothing beside
    if (
        damage == "weights"
    ):  # an update never loads the old weights: it writes a whole new generation
        _index(media, index, tmp_path / "run")
        MediaIndex(index)
        return
    with pytest.raises(DataError, match=expect):  # an update refuses to build on it ...
        _index(media, index, tmp_path / "run")
    if damage == "manifest":  # ... a rebuild replaces it (one case: each rebuild embeds everything)
        stats = _index(media, index, tmp_path / "run", ["index.rebuild=true"])
        assert stats["segments"] == len(IndexStore(built[1]).segments())
        MediaIndex(index)


# ---------------------------------------------------------------------- 2. concurrent builds
def test_second_build_fails_with_the_holders_pid_or_waits(built, index, tmp_path):
    media = built[0]
    store = IndexStore(index)
    before = (index / "CURRENT").read_text()
    with (
        store.writer_lock(),
        pytest.raises(ConfigError, match=f"being built by another process \\(pid {os.getpid()}\\)"),
    ):
        _index(media, index, tmp_path / "run")
    assert (index / "CURRENT").read_text() == before

    held = threading.Event()

    def hold() -> None:
        with store.writer_lock():
            held.set()
            time.sleep(1.0)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    t0 = time.monotonic()
    stats = _index(media, index, tmp_path / "run2", ["index.lock_wait_s=30"])
    assert time.monotonic() - t0 >= 0.5 and stats["reused"] == stats["segments"]
    t.join()


# ---------------------------------------------------------------------- 3. content identity
def test_same_size_files_differing_in_the_middle_are_not_duplicates(tmp_path):
    from PIL import Image

    from media_retrieval.data.discovery import scan_folder

    a = np.full((400, 400, 3), 200, np.uint8)
    b = a.copy()
    b[190:210] = (255, 0, 0)  # only the middle rows differ
    for name, img in (("a", a), ("b", b)):
        (tmp_path / "media" / "cls").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "media" / "cls" / f"{name}.bmp")
    fa, fb = (tmp_path / "media" / "cls" / f"{n}.bmp" for n in "ab")
    assert fa.stat().st_size == fb.stat().st_size
    ra, rb = fa.read_bytes(), fb.read_bytes()
    assert (
        ra[:65536] == rb[:65536] and ra[-65536:] == rb[-65536:]
    )  # a head/tail hash sees no difference
    items, skipped = scan_folder(tmp_path / "media", "d", kinds=("image",))
    assert len(items) == 2 and not skipped  # training's duplicate detection keeps both
    _index(tmp_path / "media", tmp_path / "index", tmp_path / "run")
    store = IndexStore(tmp_path / "index")
    segs, vecs = store.segments(), store.embeddings()
    assert len({s.key for s in segs}) == 2
    assert not np.allclose(vecs[0], vecs[1])


def test_hash_cache_does_not_reread_unchanged_files(tmp_path, monkeypatch):
    from media_retrieval.data import discovery

    f = tmp_path / "x.bin"
    f.write_bytes(os.urandom(1000))
    cache = discovery.HashCache(tmp_path / "h.sqlite")
    first = cache(f)
    calls = []
    monkeypatch.setattr(
        discovery, "sha256_file", lambda p, chunk=1 << 20: calls.append(p) or "0" * 64
    )
    assert (
        discovery.HashCache(tmp_path / "h.sqlite")(f) == first and not calls
    )  # persisted, not re-read
    f.write_bytes(os.urandom(1000))
    discovery.HashCache(tmp_path / "h.sqlite")(f)
    assert calls == [f]  # changed content is hashed again


# ---------------------------------------------------------------------- 4. single bad files
def _bomb_png(path: Path, side: int = 20000) -> Path:
    """A small file that claims to be a 20000 x 20000 image (over PIL's bomb limit)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )
    return path


def _resolution_change(path: Path) -> Path:
    """An MPEG-TS stream (named .mpg) whose resolution changes half-way."""
    import io

    import av

    def part(w: int, h: int) -> bytes:
        buf = io.BytesIO()
        with av.open(buf, "w", format="mpegts") as c:
            s = c.add_stream("libx264", rate=8)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for i in range(12):
                img = np.full((h, w, 3), 40 + 10 * i, np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        return buf.getvalue()

    path.write_bytes(part(64, 48) + part(96, 64))
    return path


def test_fifo_bomb_and_resolution_change_never_stop_index_or_search(tmp_path):
    """Case 4: a FIFO named pipe.mp4 (would block forever), a PNG over the decompression-bomb
    limit and a video whose resolution changes mid-stream: the build finishes and lists what it
    skipped; a batch of queries answers every readable one and lists the others."""
    media = tmp_path / "media"
    write_video(media / "ok" / "a.mp4", "red_disc", 1.0, seed=1)
    write_image(media / "ok" / "b.png", "blue_stripes", seed=2)
    os.mkfifo(media / "pipe.mp4")
    _bomb_png(media / "bomb.png")
    _resolution_change(media / "switch.mpg")
    index = tmp_path / "index"
    r = run_script(
        "index.py",
        [f"media_dir={media}", f"index_dir={index}", *MODEL, f"hydra.run.dir={tmp_path / 'h'}"],
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    store = IndexStore(index)
    skipped = {Path(p).name: why for p, why in store.skipped()}
    assert set(skipped) == {"pipe.mp4", "bomb.png"}, skipped
    assert (
        "not a regular file" in skipped["pipe.mp4"] and "decompression-bomb" in skipped["bomb.png"]
    )
    assert "switch.mpg" in {Path(s.rel_path).name for s in store.segments()}
    queries = tmp_path / "q"
    queries.mkdir()
    os.mkfifo(queries / "fifo.mp4")
    _bomb_png(queries / "bomb.png")
    shutil.copy(media / "switch.mpg", queries / "switch.mpg")
    shutil.copy(media / "ok" / "a.mp4", queries / "good.mp4")
    r = run_script(
        "search.py",
        [f"index_dir={index}", f"query={queries}", "k=2", f"hydra.run.dir={tmp_path / 'h2'}"],
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "good.mp4" in r.stdout and "switch.mpg" in r.stdout
    assert (
        "2 of 4 queries could not be read" in r.stdout
        and "bomb.png" in r.stdout
        and "fifo.mp4" in r.stdout
    )


# ---------------------------------------------------------------------- 5. full disk
def _full_disk_after(monkeypatch, n_ok: int, target: str) -> None:
    """Writes through utils.files succeed ``n_ok`` times for paths ending with ``target``, then the
    next such write stores half its bytes and fails with ENOSPC (a disk filling up mid-write)."""
    import builtins
    import errno

    from media_retrieval.utils import files

    count = {"n": 0}
    real_open = builtins.open

    class Half:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def fake_open(path, mode="r", *a, **kw):
        fh = real_open(path, mode, *a, **kw)
        if any(c in mode for c in "wx") and str(path).endswith(target):  # "x": exclusive creation
            count["n"] += 1
            if count["n"] > n_ok:
                return Half(fh)
        return fh

    monkeypatch.setattr(files, "open", fake_open, raising=False)


@pytest.mark.slow
def test_full_disk_never_truncates_last_ckpt_and_resume_reaches_the_same_metrics(
    tiny_dirs, tmp_path, monkeypatch
):
    from media_retrieval.cli.train import train
    from media_retrieval.utils.checkpoint import is_intact

    det = ["trainer.deterministic=true", "seed=7", "callbacks.model_checkpoint.save_top_k=0"]

    def cfg(out, extra):
        c = compose_cfg("train.yaml", [*tiny_overrides(*tiny_dirs), *det, *extra], out)
        GlobalHydra.instance().clear()
        return c

    full = tmp_path / "full"
    train(cfg(full, ["trainer.max_epochs=3"]))
    part = tmp_path / "part"
    _full_disk_after(
        monkeypatch, 1, ".tmp"
    )  # epoch 1's last.ckpt is written, epoch 2's hits a full disk
    with pytest.raises(
        MediaRetrievalError,
        match="No space left on device.*last good checkpoint .*last.ckpt is intact",
    ):
        train(cfg(part, ["trainer.max_epochs=3"]))
    monkeypatch.undo()
    last = part / "checkpoints" / "last.ckpt"
    assert is_intact(last) and not list((part / "checkpoints").glob(".*tmp"))
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0
    train(cfg(part, ["trainer.max_epochs=3", "ckpt_path=last"]))
    a = json.loads((full / "retrieval" / "results.json").read_text())
    b = json.loads((part / "retrieval" / "results.json").read_text())
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(
        [(r["precision"], r["map"]) for r in a], [(r["precision"], r["map"]) for r in b], atol=1e-9
    )


def test_damaged_last_ckpt_falls_back_to_the_newest_intact_one(tmp_path, caplog):
    from omegaconf import OmegaConf

    from media_retrieval.training import resolve_resume

    ck = tmp_path / "checkpoints"
    ck.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 0}, ck / "epoch_000.ckpt")
    time.sleep(0.01)
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 1}, ck / "epoch_001.ckpt")
    data = (ck / "epoch_001.ckpt").read_bytes()
    (ck / "last.ckpt").write_bytes(
        data[: len(data) // 2]
    )  # what a streamed write on a full disk leaves
    cfg = OmegaConf.create(
        {"ckpt_path": "last", "paths": {"output_dir": str(tmp_path)}, "trainer": {}}
    )
    with caplog.at_level("WARNING"):
        assert resolve_resume(cfg) == str(ck / "epoch_001.ckpt")
    assert "damaged" in caplog.text
    for f in ck.glob("epoch_*.ckpt"):
        f.write_bytes(b"junk")
    with pytest.raises(ConfigError, match="every other checkpoint .* damaged"):
        resolve_resume(cfg)


def test_full_disk_in_faiss_write_cleans_up_and_keeps_the_live_index(
    built, index, tmp_path, monkeypatch
):
    from media_retrieval.retrieval import backends

    media = built[0]
    before = MediaIndex(index)
    expected = [
        h.segment.key for h in before.search_vectors(before.embed([str(_query(media))]), 5, 0.8)[0]
    ]

    def full(self, folder):
        raise RuntimeError(
            "Error in faiss::FileIOWriter: fwrite returned 0 (No space left on device)"
        )

    monkeypatch.setattr(backends.FaissBackend, "save", full)
    with pytest.raises(
        MediaRetrievalError, match="No space left on device.*live index is unchanged"
    ):
        _index(
            media,
            index,
            tmp_path / "run",
            ["index.backend=hnsw", "index.rebuild=true", "clip.frames=1"],
        )
    assert not list(index.glob(".gen-*")) and [p.name for p in index.glob("gen-*")] == [
        _gen(index).name
    ]
    after = MediaIndex(index)
    assert [
        h.segment.key for h in after.search_vectors(after.embed([str(_query(media))]), 5, 0.8)[0]
    ] == expected


# ---------------------------------------------------------------------- 6. one-line errors
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.devices=0"], "trainer.devices must be >= 1"),
        (["model.temporal.hidden=0"], "model.temporal.hidden must be >= 1"),
        (["data.clip.resize=foo"], "data.clip.resize='foo'; valid: short_side_crop, stretch"),
        (["retrieval.table_k=7"], "retrieval.table_k=7 is not one of retrieval.k"),
        (["trainer.accelerator=gpu"], "needs a CUDA GPU and none is visible"),
        (["logger=wandb"], "logger=wandb needs a W&B login"),
    ],
)
def test_config_errors_fail_at_startup(overrides, message, tiny_dirs, tmp_path, monkeypatch):
    from media_retrieval.config_checks import validate_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no W&B login
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "")
    cfg = compose_cfg("train.yaml", [*tiny_overrides(*tiny_dirs), *overrides], tmp_path)
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("index.options.hnsw_m=0", "hnsw_m must be an integer >= 2"),
        ("index.options.kmeans_clusters=-3", "kmeans_clusters must be an integer >= 0"),
        ("index.options.nprobe=-1", "nprobe must be an integer >= 1"),
    ],
)
def test_index_options_out_of_range_are_refused_before_faiss_sees_them(
    option, message, built, tmp_path
):
    with pytest.raises(ConfigError, match=message):
        _index(built[0], tmp_path / "i", tmp_path / "run", ["index.backend=hnsw", option])


def test_index_dir_that_is_a_file_and_fdr_resume_are_one_line(built, tiny_dirs, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        _index(built[0], tmp_path / "afile", tmp_path / "run")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        MediaIndex(tmp_path / "afile")
    from media_retrieval.cli.train import train

    cfg = compose_cfg(
        "train.yaml", [*tiny_overrides(*tiny_dirs), "debug=fdr", "ckpt_path=last"], tmp_path
    )
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="fast_dev_run.*cannot resume"):
        train(cfg)


def test_a_small_folder_trains_out_of_the_box(tmp_path, caplog):
    """27 clips of 3 classes (issue 28): 2 classes are trained on (1 held out as unseen, said
    with the override that trains on all), validation keeps 2 clips, and the run finishes. A
    folder too small for any validation keeps the last epoch's checkpoint, with a warning."""
    import csv

    from media_retrieval.cli.train import train

    for c in ("red_disc", "blue_stripes", "green_checker"):
        for j in range(9):
            write_video(tmp_path / "data" / c / f"{c}_{j}.mp4", c, 1.0, seed=j + 10 * len(c))
    over = [
        "data=folder",
        f"data.root={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "data.clip.frames=2",
        "data.clip.image_size=48",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "logger=csv",
        "data.num_workers=0",
    ]
    cfg = compose_cfg("train.yaml", over, tmp_path / "out")
    GlobalHydra.instance().clear()
    with caplog.at_level("INFO"):
        train(cfg)
    rows = list(csv.DictReader((tmp_path / "out" / "split.csv").open()))
    trained = {r["label"] for r in rows if r["role"] in ("train", "val")}
    assert len(trained) == 2 and sum(r["role"] == "val" for r in rows) >= 2
    assert any(
        "1 class(es) held out of training as unseen" in r.getMessage()
        and "data.unseen_classes=0" in r.getMessage()
        for r in caplog.records
    )
    assert (tmp_path / "out" / "retrieval" / "results.json").is_file()
    # 2 clips of each of 2 classes: 1 class trained, 1 clip to train on, none left to validate
    for c in ("red_disc", "blue_stripes"):
        for j in range(2):
            write_video(tmp_path / "tiny" / c / f"{c}_{j}.mp4", c, 1.0, seed=j + 10 * len(c))
    over[1] = f"data.root={tmp_path / 'tiny'}"
    cfg = compose_cfg("train.yaml", over, tmp_path / "out2")
    GlobalHydra.instance().clear()
    caplog.clear()
    with caplog.at_level("WARNING"):
        train(cfg)
    assert any("the last epoch's checkpoint is kept" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "out2" / "checkpoints").glob("*.ckpt"))


def test_multirun_where_every_job_failed_exits_non_zero(tmp_path):
    r = run_script(
        "train.py",
        [
            "-m",
            "retrieval.table_k=7,8",
            f"hydra.sweep.dir={tmp_path}",
            f"paths.data_dir={tmp_path}/data",
        ],
        timeout=120,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    assert "2 of 2 jobs failed" in r.stderr and "every job failed" in r.stderr
    assert "Traceback" not in r.stderr


def test_ddp_gather_with_an_empty_rank(tmp_path):
    """A rank that collected nothing (every clip of its shard failed to load) still gathers:
    torchmetrics' cat sync with the width agreed first; ids de-duplicated."""
    script = tmp_path / "gather.py"
    script.write_text(f"""
import sys, torch, torch.distributed as dist
sys.path.insert(0, {str(ROOT / "src")!r})
from media_retrieval.utils.distributed import EmbeddingCollector, gather_by_id
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://{tmp_path / "rdv"}", rank=rank, world_size=2)
def all_gather(t):
    out = [torch.zeros_like(t) for _ in range(2)]
    dist.all_gather(out, t.contiguous())
    return torch.stack(out)
c = EmbeddingCollector()
if rank == 0:
    c.update(torch.tensor([3, 1, 3]), torch.ones(3, 5))
i, e = gather_by_id(c, 2, all_gather)
assert i.tolist() == [1, 3] and tuple(e.shape) == (2, 5), (i, e.shape)
print("ok", rank)
""")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert [o[0].strip() for o in outs] == ["ok 0", "ok 1"]


# ---------------------------------------------------------------------- 7. paths
def test_unquoted_special_path_names_the_fix_and_the_quoted_form_works(built, tmp_path):
    q = tmp_path / "café (1).jpg"
    shutil.copy(_query(built[0]), q)
    r = run_script("search.py", [f"index_dir={built[1]}", f"query={q}"], timeout=60)
    assert r.returncode == 2
    assert f"""'query="{q}"'""" in r.stderr and "Traceback" not in r.stderr
    cfg = compose_cfg("search.yaml", [f"index_dir={built[1]}", f'query="{q}"'], tmp_path)
    GlobalHydra.instance().clear()
    assert cfg.query == str(q)


# ---------------------------------------------------------------------- 8. memory
def _avi(path: Path, seconds: int) -> Path:
    import av

    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        for i in range(25 * seconds):
            for p in s.encode(av.VideoFrame.from_ndarray(np.roll(base, i, axis=1), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_avi_decoding_memory_does_not_grow_with_length(tmp_path):
    from media_retrieval.data.video import HOLD_PIXELS

    assert HOLD_PIXELS < 25 * 10 * 320 * 240  # both clips are longer than what is ever held
    short, long = _avi(tmp_path / "short.avi", 10), _avi(tmp_path / "long.avi", 40)
    probe = (
        f"import resource, sys; sys.path.insert(0, {str(ROOT / 'src')!r});"
        "from media_retrieval.data.video import load_frames;"
        f"load_frames({str(tmp_path / 'warm.avi')!r}, 16);"
        "a = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "x = load_frames(sys.argv[1], 16);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - a, tuple(x.shape))"
    )
    _avi(tmp_path / "warm.avi", 1)
    growth = {}
    for name, f in (("short", short), ("long", long)):
        r = subprocess.run(
            [sys.executable, "-c", probe, str(f)], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr[-2000:]
        kb, shape = r.stdout.split(" ", 1)
        assert "(16, 3, 240, 320)" in shape
        growth[name] = max(int(kb), 1)
    assert growth["long"] <= 1.5 * growth["short"] + 2048, growth  # +2 MB: allocator noise


# ---------------------------------------------------------------------- 9. model selection
def test_model_selection_uses_validation_only():
    import yaml

    train_cfg = yaml.safe_load((ROOT / "configs" / "train.yaml").read_text())
    assert train_cfg["optimized_metric"].startswith("val/")
    for sweep in (ROOT / "sweeps").glob("*.yaml"):
        s = yaml.safe_load(sweep.read_text())
        assert s["metric"]["name"].startswith("val/") or s["parameters"]["embeddings"][
            "value"
        ].endswith("val_embeddings.npz"), sweep


def test_best_delta_is_chosen_on_validation_rows_and_only_reported_on_test():
    from media_retrieval.reporting.tables import best_delta_table

    def rows(best_delta: float) -> list[dict]:
        out = [
            {
                "ranking": "euclidean",
                "split": "all",
                "k": 5,
                "delta": None,
                "accuracy": 0.5,
                "p_at_k": 0.5,
                "empty_share": 0.0,
            }
        ]
        for d in (0.5, 0.7, 0.9):
            out.append(
                {
                    "ranking": "par",
                    "split": "all",
                    "k": 5,
                    "delta": d,
                    "accuracy": 0.9 if d == best_delta else 0.6,
                    "p_at_k": 0.4,
                    "empty_share": 0.0,
                }
            )
        return out

    table = best_delta_table(rows(0.5), rows(0.9))
    line = next(ln for ln in table.splitlines() if ln.startswith("| all | 5 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert (
        cells[2] == "0.50" and cells[3] == "0.9000" and cells[5] == "0.6000"
    )  # val's δ; test's value there
    assert "Not chosen" in best_delta_table(None, rows(0.9))


@pytest.mark.parametrize("sampling", ["index", "time"])
def test_streaming_decode_gives_the_frames_of_holding_everything(sampling, tmp_path, monkeypatch):
    """Past the hold budget the frames come from the predicted set (index sampling) or a second
    pass (time sampling, chunks): the same pixels as holding every frame, jitter included."""
    from media_retrieval.data import video

    path = write_video(tmp_path / "v.mp4", "red_disc", 3.0, seed=4)
    kw = {"num": 5, "sampling": sampling}
    held = video.decode_all_frames(path, **kw, rng=np.random.default_rng(1))
    chunk = video.decode_all_frames(path, **kw, start_s=1.0, end_s=2.0)
    monkeypatch.setattr(video, "HOLD_PIXELS", 1)
    assert torch.equal(video.decode_all_frames(path, **kw, rng=np.random.default_rng(1)), held)
    assert torch.equal(video.decode_all_frames(path, **kw, start_s=1.0, end_s=2.0), chunk)
