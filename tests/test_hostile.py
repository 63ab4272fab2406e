"""Security and integrity, round 2 (issue 25): what a foreign index folder, a hostile media
file, an abusive client or an unlucky disk can make the framework do. One test per group of
docs/reliability.md's "Security, round 2" table (the group number is in each test's name);
floods and bombs are scaled down with limits set low, as the limits' docs say a user can."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, compose_cfg, free_port, tiny_overrides
from helpers.index_files import TINY_MODEL, index_folder
from helpers.index_files import live_generation as _gen
from helpers.index_files import resign as _resign
from helpers.media_library import CLASSES, write_image, write_video
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from media_retrieval.errors import ConfigError, DataError, MediaRetrievalError
from media_retrieval.retrieval.index_store import IndexStore
from media_retrieval.retrieval.media_index import MediaIndex
from media_retrieval.utils.limits import reset_limits, set_limits

MODEL = TINY_MODEL
_index = index_folder


def _small_library(root: Path) -> Path:
    for i, label in enumerate(CLASSES):
        write_video(root / label / f"{label}_clip.mp4", label, 1.5, seed=i)
        write_image(root / label / f"{label}_photo.jpg", label, seed=10 + i)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("hostile")
    media = _small_library(base / "media")
    _index(media, base / "index", base / "run")
    return media, base / "index"


@pytest.fixture
def index(built, tmp_path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(built[1], copy, symlinks=True)
    return copy


@pytest.fixture
def low_limits():
    """Limits lowered for one test (the user's knob; files never set them)."""
    yield set_limits
    reset_limits()


def _within(seconds: float, fn, *args):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it takes longer."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), (
        f"{getattr(fn, '__name__', fn)} still running after {seconds} s (it hangs)"
    )
    if "error" in out:
        raise out["error"]
    return out.get("value")


# ---------------------------------------------------------------------- 1. where an index connects
def test_1_a_foreign_index_cannot_choose_where_to_connect(index, tmp_path, monkeypatch):
    from media_retrieval.retrieval import milvus

    calls: list[str] = []

    def no_connection(uri: str):
        calls.append(uri)
        raise ConfigError(f"(test) would connect to {uri}")

    monkeypatch.setattr(milvus, "_client", no_connection)
    monkeypatch.setenv("MILVUS_TOKEN", "the-users-secret")
    monkeypatch.delenv("MILVUS_URI", raising=False)
    gen = _gen(index)
    meta = json.loads((gen / "search" / "backend.json").read_text())
    for planted in ("http://attacker.example:19530", str(tmp_path / "outside" / "evil.db")):
        meta = {**meta, "backend": "milvus", "options": {**meta["options"], "milvus_uri": planted}}
        (gen / "search" / "backend.json").write_text(json.dumps(meta))
        _resign(gen)
        with pytest.raises(ConfigError, match="cannot choose where to connect") as err:
            MediaIndex(index)
        assert "\n" not in str(err.value)
        assert calls == [] and not (tmp_path / "outside").exists()  # no connection, no file outside
    with pytest.raises(
        ConfigError, match="not at the given"
    ):  # the user's URI must be the recorded one
        MediaIndex(index, search_options={"milvus_uri": "http://my-server:19530"})
    assert calls == []
    with pytest.raises(
        ConfigError, match="would connect"
    ):  # the user names it: then, and only then
        MediaIndex(index, search_options={"milvus_uri": planted})
    assert calls == [planted]
    monkeypatch.setenv("MILVUS_URI", planted)  # the user's environment counts as the user's word
    with pytest.raises(ConfigError, match="would connect"):
        MediaIndex(index)


# ---------------------------------------------------------------------- 2. connection flood
def _get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0), data


@pytest.mark.slow
def test_2_a_flood_of_idle_connections_is_shed_and_the_service_recovers(built, tmp_path):
    media, index = built
    port = free_port()
    errors = tmp_path / "serve.err"

    def eventually(path: str, within: float) -> bytes:
        """The response to ``path`` once it is 200; shed (503) or reset meanwhile is allowed, dying
        is not."""
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(OSError):
                status, body = _get(port, path, 5)
                if status == 200:
                    return body
            assert proc.poll() is None and time.monotonic() < deadline, errors.read_text()[-2000:]
            time.sleep(0.3)

    def low_fd_limit() -> None:  # the usual limit, scaled down: 256 descriptors in all
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "media_retrieval",
            "serve",
            f"index_dir={index}",
            f"port={port}",
            "max_connections=64",
            "header_timeout_s=1",
            "log_level=warning",
        ],
        cwd=ROOT,
        env=env,
        preexec_fn=low_fd_limit,
        stdout=subprocess.DEVNULL,
        stderr=errors.open("w"),
    )
    flood: list[socket.socket] = []
    try:
        eventually("/health", 90)
        # the server stopped while the flood arrives, as when it is starved of CPU: the whole flood
        # is
        # queued by the kernel and reaches asyncio's accept loop as one burst (that burst used to
        # run
        # the process out of descriptors, and the failed log write that followed killed it)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            for _ in range(400):  # more idle sockets than the server has descriptors
                s = socket.socket()
                s.setblocking(
                    False
                )  # past the backlog the kernel drops the SYN; the client retries later
                s.connect_ex(("127.0.0.1", port))
                flood.append(s)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # answered during the flood: served, or shed at once (503, or closed before it was read)
        try:
            status, body = _get(port, "/health")
            assert status in (200, 503), body[:200]
        except ConnectionResetError:
            pass
        # idle connections are closed after their 1 s header time-out; the ones the kernel dropped
        # retry for a while (SYN retries at 1, 3, 7 s ...), so serving comes back within seconds
        eventually("/health", 20)
        body = eventually("/stats", 20)
        assert json.loads(body.split(b"\r\n\r\n", 1)[1])["items"] > 0
        for s in flood:
            s.close()
        flood.clear()
        time.sleep(0.5)
        assert (
            _get(port, "/health")[0] == 200 and proc.poll() is None
        )  # after the flood: still serving
    finally:
        for s in flood:
            s.close()
        proc.terminate()  # whatever failed above: no server is left running
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------------- 3. lock and reader links
def test_3_lock_and_reader_links_are_never_written_through(built, index, tmp_path):
    media = built[0]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (index / ".lock").unlink()
    os.symlink(victim, index / ".lock")
    with pytest.raises(DataError, match=r"\.lock is a symbolic link"):
        _index(media, index, tmp_path / "run")
    assert victim.read_text() == "precious\n"
    (index / ".lock").unlink()
    # a reader lease file planted as a link: opening takes no lease through it; a build
    # neither truncates nor deletes what it points at
    name = (index / "CURRENT").read_text().strip()
    lease = index / ".readers" / f"{name}.lock"
    lease.parent.mkdir(exist_ok=True)  # made by the first reader: this test may run before any
    lease.unlink(missing_ok=True)
    os.symlink(victim, lease)
    MediaIndex(index).close()
    _index(media, index, tmp_path / "run2", ["index.rebuild=true"])
    assert victim.read_text() == "precious\n"
    # the whole .readers folder as a link out: nothing is created there
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(index / ".readers")
    os.symlink(outside, index / ".readers")
    MediaIndex(index).close()
    assert list(outside.iterdir()) == []
    with pytest.raises(DataError, match=r"\.readers is a symbolic link"):
        _index(media, index, tmp_path / "run3")


# ---------------------------------------------------------------------- 4. decompression bombs
def test_4_oversized_frames_are_refused_before_decoding_on_every_path(built, tmp_path, low_limits):
    from fastapi.testclient import TestClient

    from media_retrieval.data.video import load_frames, probe_video
    from media_retrieval.serve.app import ServiceSettings, create_app

    low_limits(max_frame_pixels=400_000)  # a 16 000 x 16 000 bomb, scaled down
    lib = tmp_path / "lib"
    _small_library(lib)
    bomb = lib / "red_disc" / "bomb.mp4"  # an image behind a video name: PyAV's path, not Pillow's
    Image.new("RGB", (1000, 1000), (200, 10, 10)).save(bomb, format="PNG")
    big_png = lib / "red_disc" / "big.png"
    Image.new("RGB", (800, 800)).save(big_png)
    for path in (bomb, big_png):
        with pytest.raises(DataError, match="over the limit of 400000 pixels"):
            load_frames(str(path), 4)
    with pytest.raises(DataError, match="over the limit"):
        probe_video(bomb)
    for decoder in ("seek", "decode_all"):
        with pytest.raises(DataError, match="over the limit"):
            load_frames(str(bomb), 4, decoder=decoder)
    stats = _index(
        lib, tmp_path / "idx", tmp_path / "run"
    )  # skipped with the reason, the rest indexed
    skipped = dict(IndexStore(tmp_path / "idx").skipped())
    assert (
        stats["files"] == 6
        and "over the limit" in skipped[str(bomb)]
        and "over the limit" in skipped[str(big_png)]
    )
    app = create_app(ServiceSettings(index_dir=str(tmp_path / "idx")))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/search", files={"file": ("q.mp4", bomb.read_bytes(), "video/mp4")})
        assert r.status_code == 415 and "over the limit" in r.json()["error"]
        assert client.get("/health").status_code == 200


# ---------------------------------------------------------------------- 5. non-regular files,
# SQLite views
@pytest.mark.parametrize(
    "plant", ["fifo_in_generation", "fifo_current", "device", "recursive_view", "trigger"]
)
def test_5_non_regular_files_and_foreign_sqlite_schemas_are_refused_without_hanging(plant, index):
    gen = _gen(index)
    if plant == "fifo_in_generation":  # listed as an empty file: only its type tells it apart
        (gen / "search" / "backend.json").unlink()
        os.mkfifo(gen / "search" / "backend.json")
        m = json.loads((gen / "manifest.json").read_text())
        m["files"]["search/backend.json"] = {"size": 0, "sha256": hashlib.sha256(b"").hexdigest()}
        (gen / "manifest.json").write_text(json.dumps(m))
        expect = "not a regular file"
    elif plant == "fifo_current":
        (index / "CURRENT").unlink()
        os.mkfifo(index / "CURRENT")
        expect = "CURRENT is not a small regular file"
    elif plant == "device":
        os.symlink("/dev/zero", gen / "zero")
        expect = "symbolic link"
    else:
        con = sqlite3.connect(gen / "metadata.sqlite")
        if plant == "recursive_view":
            con.execute("ALTER TABLE segments RENAME TO seg_data")
            con.execute(
                "CREATE VIEW segments AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 "
                "FROM r) "
                "SELECT seg_data.* FROM seg_data, r"
            )
        else:
            con.execute("CREATE TRIGGER t AFTER INSERT ON skipped BEGIN DELETE FROM segments; END")
        con.commit()
        con.close()
        _resign(gen)
        expect = "unexpected schema"
    with pytest.raises(DataError, match=expect) as err:
        _within(20, MediaIndex, index)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- 6. uploads: auth first,
# bounded
def _asgi(
    guard, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, int]:
    """(status, how many times the body was read) of one request through ``guard``."""
    reads, sent = [0], {}

    async def receive():
        reads[0] += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(guard(scope, receive, send))
    return sent["status"], reads[0]


def test_6_uploads_are_authorised_and_bounded_before_the_body_is_read():
    from media_retrieval.serve.app import LOOPBACK_HOSTS, RequestGuard, ServiceSettings

    async def app(scope, receive, send):  # reads the whole body, like a multipart parser
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    body = b"x" * 4096
    upload = {
        "host": "127.0.0.1",
        "content-length": str(len(body)),
        "content-type": "multipart/form-data; boundary=x",
    }
    guard = RequestGuard(
        app,
        ServiceSettings(
            index_dir="-", token="s3cret", max_uploads=2, max_upload_mb=1, max_spool_mb=1
        ),
        LOOPBACK_HOSTS,
    )
    assert _asgi(guard, "POST", "/search", upload, body) == (
        401,
        0,
    )  # refused before a byte is read
    auth = {**upload, "authorization": "Bearer s3cret"}
    assert _asgi(guard, "POST", "/search", auth, body) == (200, 1)
    guard.uploads = 2  # as if two uploads were streaming in
    assert _asgi(guard, "POST", "/search", auth, body)[0] == 503
    guard.uploads, guard.spooled = (
        0,
        2**20 - 100,
    )  # the spool budget nearly used by uploads in flight
    with pytest.raises(
        Exception, match="busy"
    ):  # the app sees 503 as it reads (FastAPI answers it as JSON)
        _asgi(guard, "POST", "/search", auth, body)
    assert guard.spooled == 2**20 - 100 and guard.uploads == 0  # released when the request ended
    declared = {**auth, "content-length": str(2 * 2**20)}
    assert _asgi(guard, "POST", "/search", declared, body) == (413, 0)


# ---------------------------------------------------------------------- 7. DNS rebinding
def test_7_without_a_token_only_loopback_host_names_are_served(index):
    from fastapi.testclient import TestClient

    from media_retrieval.serve.app import ServiceSettings, create_app, host_name

    assert (
        host_name("[::1]:8000") == "::1"
        and host_name("LOCALHOST:80") == "localhost"
        and host_name("x") == "x"
    )
    app = create_app(ServiceSettings(index_dir=str(index), allowed_hosts=("media.lan",)))
    with TestClient(app) as client:  # TestClient's default Host is "testserver"
        for host, status in [
            ("testserver", 400),
            ("attacker.example", 400),
            ("127.0.0.1:8000", 200),
            ("localhost", 200),
            ("[::1]:8000", 200),
            ("media.lan", 200),
        ]:
            r = client.get("/stats", headers={"host": host})
            assert r.status_code == status, (host, r.text)
        assert (
            "DNS rebinding" in client.get("/", headers={"host": "attacker.example"}).json()["error"]
        )
    with TestClient(
        create_app(ServiceSettings(index_dir=str(index), token="t"))
    ) as client:  # a token decides
        assert (
            client.get(
                "/stats", headers={"host": "anything", "authorization": "Bearer t"}
            ).status_code
            == 200
        )


# ---------------------------------------------------------------------- 8. in-range but hostile
# sizes
def _patch_mp4_duration(path: Path, seconds: int) -> None:
    """Make an MP4's sample table claim ``seconds`` for its few frames (each sample's duration in
    ``stts``, and the headers' totals): its packets' timestamps then say so too. Past what 32
    bits hold at the file's time scale, the time scale becomes 1 (2^31 s fits then)."""
    data = bytearray(path.read_bytes())
    mvhd, tkhd, mdhd, stts = (data.find(b) + 4 for b in (b"mvhd", b"tkhd", b"mdhd", b"stts"))
    entries = [
        (int.from_bytes(data[stts + 8 + 8 * i : stts + 12 + 8 * i], "big"), stts + 12 + 8 * i)
        for i in range(int.from_bytes(data[stts + 4 : stts + 8], "big"))
    ]
    frames = sum(n for n, _ in entries)
    scale = int.from_bytes(data[mdhd + 12 : mdhd + 16], "big")
    if seconds * scale >= 2**32:
        scale = 1
        data[mdhd + 12 : mdhd + 16] = (1).to_bytes(4, "big")
    for _, at in entries:
        data[at : at + 4] = (seconds * scale // frames).to_bytes(4, "big")
    data[mdhd + 16 : mdhd + 20] = min(seconds * scale, 2**32 - 2).to_bytes(4, "big")
    movie_scale = int.from_bytes(data[mvhd + 12 : mvhd + 16], "big")
    elst = (
        data.find(b"elst") + 4
    )  # the edit list would otherwise cut the presentation at its old end
    for at in (mvhd + 16, tkhd + 20) + ((elst + 8,) if elst > 3 else ()):
        data[at : at + 4] = min(seconds * movie_scale, 2**32 - 2).to_bytes(4, "big")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "case", ["hidden", "clip_spec", "sparse_file", "claimed_20000s", "claimed_2e31s"]
)
def test_8_sizes_read_from_files_are_bounded_before_allocation(case, index, tmp_path):
    from media_retrieval.data.clips import ClipSpec
    from media_retrieval.data.video import load_frames, probe_video
    from media_retrieval.retrieval.indexer import file_segments

    gen = _gen(index)
    if case == "hidden":
        spec = json.loads((gen / "model.json").read_text())
        spec["hparams"]["temporal"] = {
            **spec["hparams"].get("temporal", {}),
            "cell": "lstm",
            "hidden": 12000,
        }
        (gen / "model.json").write_text(json.dumps(spec))
        _resign(gen)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(DataError, match="over the limit of 500,000,000"):
            MediaIndex(index)
        assert (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000
        )  # < 1 GB more (KiB)
    elif case == "clip_spec":
        with pytest.raises(DataError, match="over the limit"):
            ClipSpec.from_dict({"frames": 1024, "image_size": 4096})
    elif case == "sparse_file":
        with open(gen / "search" / "extra.bin", "wb") as fh:
            fh.truncate(4 << 30)  # 4 GiB, sparse: no disk used, but hashing it would take ~16 s
        _resign_sizes_only(gen)
        t0 = time.monotonic()
        with pytest.raises(DataError, match="more than an index"):
            MediaIndex(index)
        assert time.monotonic() - t0 < 5
    else:
        clip = write_video(tmp_path / "claims.mp4", CLASSES[0], 2.0, seed=3)
        _patch_mp4_duration(clip, 20_000 if case == "claimed_20000s" else 2**31)
        if case == "claimed_20000s":
            info = probe_video(clip)
            assert info.duration_s > 10_000 and info.packets == 16  # 16 packets say 20 000 s
            segments = file_segments(
                clip, tmp_path, ClipSpec(frames=2, image_size=32, chunk_s=10.0), None
            )
            assert len(segments) <= 16  # not 2 000: a segment without a frame of its own is none
        else:
            with pytest.raises(DataError, match="claims"):
                probe_video(clip)
        for decoder in ("seek", "decode_all"):  # never MemoryError, whatever the header says
            try:
                assert load_frames(str(clip), 2, decoder=decoder).shape[0] == 2
            except DataError as exc:  # a one-line refusal is fine too
                assert "\n" not in str(exc)


def _resign_sizes_only(gen: Path) -> None:
    """List a huge file in the manifest without hashing it (the attacker's side does not care)."""
    m = json.loads((gen / "manifest.json").read_text())
    for f in sorted(gen.rglob("*")):
        rel = f.relative_to(gen).as_posix()
        if f.is_file() and rel != "manifest.json" and rel not in m["files"]:
            m["files"][rel] = {"size": f.stat().st_size, "sha256": "0" * 64}
    (gen / "manifest.json").write_text(json.dumps(m))


# ---------------------------------------------------------------------- 9. names that are not UTF-8
def test_9_a_file_name_that_is_not_utf8_is_skipped_with_its_reason(tmp_path):
    lib = _small_library(tmp_path / "lib")
    odd = os.path.join(os.fsencode(lib / CLASSES[0]), b"caf\xe9.png")
    Image.new("RGB", (64, 64), (10, 200, 10)).save(open(odd, "wb"), format="PNG")  # noqa: SIM115
    stats = _index(lib, tmp_path / "idx", tmp_path / "run")
    assert stats["files"] == 6
    skipped = dict(IndexStore(tmp_path / "idx").skipped())
    assert any(p.endswith("caf\\xe9.png") and "not valid UTF-8" in r for p, r in skipped.items())


# ---------------------------------------------------------------------- 10. planted generations,
# NaN
def test_10_a_planted_generation_cannot_brick_the_index_and_nan_embeddings_are_skipped(
    built, index, tmp_path, monkeypatch
):
    media = built[0]
    (index / "gen-999999").mkdir()
    os.symlink(tmp_path, index / "gen-000002")  # a link under the next generation's name
    _index(media, index, tmp_path / "run", ["index.rebuild=true"])
    assert (index / "CURRENT").read_text() == "gen-000002" and (index / "gen-000002").is_dir()
    assert (
        not (index / "gen-000002").is_symlink() and tmp_path.is_dir()
    )  # the link went, not what it named
    assert not (index / "gen-999999").exists()
    assert len(MediaIndex(index).segments) > 0

    from media_retrieval.models.cnn_lstm import CNNLSTM

    predict = CNNLSTM.predict_step

    def nan_for_the_first(self, batch, batch_idx):  # one clip's embedding comes out NaN
        out = predict(self, batch, batch_idx)
        out["embedding"][out["sample_id"] == 0] = float("nan")
        return out

    monkeypatch.setattr(CNNLSTM, "predict_step", nan_for_the_first)
    with pytest.raises(
        MediaRetrievalError, match="non-finite embeddings"
    ) as err:  # refused at build ...
        _index(media, tmp_path / "fresh", tmp_path / "run2")
    assert "\n" not in str(err.value) and not (tmp_path / "fresh" / "CURRENT").exists()
    monkeypatch.setattr(CNNLSTM, "predict_step", predict)
    gen = _gen(index)  # ... and at open (checksums rewritten: the values themselves are checked)
    x = np.load(gen / "embeddings.npy")
    x[1, 0] = np.inf
    np.save(gen / "embeddings.npy", x)
    _resign(gen)
    with pytest.raises(DataError, match="non-finite"):
        MediaIndex(index)


# ---------------------------------------------------------------------- 11. markup in names
def test_11_markup_in_file_names_is_shown_as_text(capsys):
    from media_retrieval.reporting.search_output import print_hits
    from media_retrieval.retrieval.index_store import Segment
    from media_retrieval.retrieval.media_index import Hit

    names = ["[bold]x[/bold].mp4", "[link=http://evil.example]safe.mp4", "broken[/].mp4", "[red"]
    hits = [
        Hit(
            i + 1,
            Segment(f"k{i}", f"/m/{n}", n, "video", 0, None, None, 1, 1, "a" * 16),
            0.1,
            0.9,
            True,
        )
        for i, n in enumerate(names)
    ]
    print_hits("[/query].mp4", hits, 0.5)
    out = capsys.readouterr().out
    for n in names:
        assert n in out


# ---------------------------------------------------------------------- 12. read-only opens write
# nothing
def test_12_a_read_only_open_writes_nothing_in_the_generation(index):
    gen = _gen(index)
    before = sorted(p.relative_to(gen).as_posix() for p in gen.rglob("*"))
    for _ in range(2):
        with MediaIndex(index) as idx:
            idx.search(str(next(iter(idx.media_root.rglob("*.mp4")))), k=2)
    assert sorted(p.relative_to(gen).as_posix() for p in gen.rglob("*")) == before


# ---------------------------------------------------------------------- 13. files changed after
# open
def test_13_files_changed_after_open_cannot_reach_a_running_search(built, index):
    query = str(next(built[0].rglob("*.mp4")))
    with MediaIndex(index) as idx:
        first = [(h.key, round(h.distance, 5)) for h in idx.search(query, k=3)]
        gen = _gen(index)
        x = np.load(gen / "embeddings.npy")
        np.save(gen / "embeddings.npy", x[::-1].copy())  # edited ...
        assert [(h.key, round(h.distance, 5)) for h in idx.search(query, k=3)] == first
        with open(
            gen / "embeddings.npy", "r+b"
        ) as fh:  # ... and truncated (SIGBUS for a memory map)
            fh.truncate(64)
        assert [(h.key, round(h.distance, 5)) for h in idx.search(query, k=3)] == first


# ---------------------------------------------------------------------- 14. Milvus rows changed
# after open
@pytest.mark.slow
def test_14_milvus_rows_changed_after_open_give_no_duplicates_and_drift_is_reported(
    tmp_path, monkeypatch
):
    pytest.importorskip("pymilvus", reason="pymilvus is a dev dependency (make env)")
    pytest.importorskip("milvus_lite", reason="milvus-lite is a dev dependency (make env)")
    from pymilvus import MilvusClient

    from media_retrieval.data.clips import ClipSpec
    from media_retrieval.retrieval import milvus
    from media_retrieval.retrieval.indexer import IndexOptions
    from media_retrieval.retrieval.media_index import default_model

    lib = _small_library(tmp_path / "lib")
    opts = IndexOptions(
        backend="milvus",
        num_workers=0,
        trainer={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    )
    idx = MediaIndex.build(
        lib,
        tmp_path / "idx",
        default_model(),
        clip_spec=ClipSpec(frames=2, image_size=48),
        options=opts,
    )
    query = str(next(lib.rglob("*.mp4")))
    keys = [h.key for h in idx.search(query, k=4)]
    backend = idx._snap.searcher.backend
    client = MilvusClient(str(tmp_path / "idx" / milvus.LITE_FILE))
    row = client.query(backend.collection, filter=backend._filter, output_fields=["*"], limit=1)[0]
    client.insert(backend.collection, [{**row, "pk": row["pk"] + "-dup"}])  # the same segment twice
    hits = [h.key for h in idx.search(query, k=4)]
    assert len(hits) == len(set(hits)) == 4 and hits == keys
    client.delete(backend.collection, filter=f'pk == "{row["pk"]}"')
    client.delete(backend.collection, filter=f'pk == "{row["pk"]}-dup"')
    monkeypatch.setattr(milvus, "DRIFT_CHECK_S", 0.0)
    with pytest.raises(MediaRetrievalError, match="changed outside this index"):
        idx.search(query, k=4)
    idx.close()


# ---------------------------------------------------------------------- 15. tracebacks that were
# reachable
@pytest.mark.parametrize(
    "case",
    [
        "nested_json",
        "nested_override",
        "port",
        "nul_path",
        "safetensors_full_disk",
        "deleted_best_checkpoint",
        "validation_422",
        "negative_queue_timeout",
        "stale_temp_file",
    ],
)
def test_15_each_former_traceback_is_one_line(
    case, built, index, tmp_path, monkeypatch, tiny_dirs, capsys
):
    from fastapi.testclient import TestClient

    from media_retrieval.serve.app import ServiceSettings, create_app

    if case == "nested_json":
        gen = _gen(index)
        (gen / "model.json").write_text("[" * 100_000 + "]" * 100_000)
        _resign(gen)
        with pytest.raises(DataError, match="nested too deeply|cannot be read") as err:
            MediaIndex(index)
        assert "\n" not in str(err.value)
    elif case == "nested_override":
        from media_retrieval.cli.launch import precheck_overrides

        with pytest.raises(ConfigError, match="nested too deeply") as err:
            precheck_overrides("search.yaml", ["k=" + "[" * 3000 + "]" * 3000])
        assert "\n" not in str(err.value)
    elif case == "port":
        from omegaconf import OmegaConf

        from media_retrieval.serve.run import serve

        with pytest.raises(ConfigError, match="port=99999 must be an integer in 0..65535"):
            serve(OmegaConf.create({"index_dir": str(index), "host": "127.0.0.1", "port": 99999}))
    elif case in ("nul_path", "validation_422"):
        with TestClient(
            create_app(ServiceSettings(index_dir=str(index))), base_url="http://127.0.0.1"
        ) as client:
            r = client.post(
                "/search",
                params={"path": "a\x00b.mp4"} if case == "nul_path" else {"path": "x", "k": "five"},
            )
            assert r.status_code == (400 if case == "nul_path" else 422)
            error = r.json()["error"]
            assert (
                isinstance(error, str)
                and "\n" not in error
                and ("NUL" in error or error.startswith("k:"))
            )
    elif case == "safetensors_full_disk":
        import safetensors.torch
        from safetensors import SafetensorError

        def full(*args, **kwargs):
            raise SafetensorError(
                "Error while serializing: IoError(Os { code: 28, kind: StorageFull })"
            )

        monkeypatch.setattr(safetensors.torch, "save_file", full)
        with pytest.raises(MediaRetrievalError, match="cannot write the index") as err:
            _index(built[0], index, tmp_path / "run", ["index.rebuild=true"])
        assert "\n" not in str(err.value) and not list(index.glob(".gen-*"))
        MediaIndex(index).close()  # the live generation is untouched
    elif case == "deleted_best_checkpoint":
        from media_retrieval.cli.train import train

        out = tmp_path / "run"
        over = [*tiny_overrides(*tiny_dirs), "trainer.max_epochs=1"]
        train(_train_cfg(over, out))
        best = [p for p in (out / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
        for p in best:
            p.unlink()
        with pytest.raises(MediaRetrievalError, match="no longer exists"):
            train(_train_cfg([*over[:-1], "trainer.max_epochs=1", "ckpt_path=last"], out))
    elif case == "negative_queue_timeout":
        with pytest.raises(ConfigError, match="queue_timeout_s > 0"):
            ServiceSettings(index_dir="-", queue_timeout_s=-1)
    else:
        from media_retrieval.utils.checkpoint import AtomicCheckpointIO

        folder = tmp_path / "ckpts"
        folder.mkdir()
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        ).stdout.strip()
        stale = folder / f".last.ckpt.{dead}.tmp"
        stale.write_bytes(b"half a checkpoint")
        io = AtomicCheckpointIO()
        io.save_checkpoint({"state_dict": {}}, folder / "last.ckpt")
        assert not stale.exists() and (folder / "last.ckpt").is_file()
        monkeypatch.setattr(
            os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        )
        with pytest.raises(OSError):
            io.save_checkpoint({"state_dict": {}}, folder / "epoch=1.ckpt")
        assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no temporary file left


def _train_cfg(overrides: list[str], out: Path):
    cfg = compose_cfg("train.yaml", overrides, out)
    GlobalHydra.instance().clear()
    return cfg
