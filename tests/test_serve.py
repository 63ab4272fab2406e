"""The search service through FastAPI's test client: search by upload and by path, hostile
uploads and paths (each a clear 4xx JSON error, the service still answering), a rebuilt index
picked up while serving, overload answered with 503, and concurrent clients."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.media_library import CLASSES, write_video
from test_search import indexed_library, run_index

from media_retrieval.errors import ConfigError
from media_retrieval.serve.app import ServiceSettings, create_app


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    media, index, made = indexed_library(base)
    app = create_app(
        ServiceSettings(index_dir=str(index), max_upload_mb=5)
    )  # default pool: 2 workers + 8 waiting
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, media, index, made, base


def ok(client: TestClient) -> None:
    """The service still answers after whatever came before."""
    assert client.get("/health").json()["status"] == "ok"


def test_search_by_upload_and_by_path(served):
    client, media, _, made, _ = served
    clip = made[CLASSES[1]][1]
    with open(clip, "rb") as fh:  # uploaded under a misleading name: typed by decoding, not by name
        r = client.post(
            "/search",
            files={"file": ("query.bin", fh, "application/octet-stream")},
            params={"k": 4},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 4 and len(body["hits"]) == 4 and body["query"] == "query.bin"
    top = body["hits"][0]
    assert top["rel_path"] == clip.relative_to(media).as_posix() and top["distance"] < 1e-3
    assert (
        not top["rel_path"].startswith("/") and "path" not in top
    )  # no absolute paths leave the service
    assert {"key", "start_s", "end_s", "spans", "cosine", "kept", "kept_by_par"} <= set(top)
    assert all(h["kept_by_par"] == h["kept"] for h in body["hits"]) and body["ranking"] == "par"
    assert body["delta"] == pytest.approx(client.get("/stats").json()["par_delta"])
    by_path = client.post(
        "/search", params={"path": clip.relative_to(media).as_posix(), "k": 4, "delta": 0.99}
    )
    assert by_path.status_code == 200
    assert [h["key"] for h in by_path.json()["hits"]] == [h["key"] for h in body["hits"]]
    assert by_path.json()["delta"] == 0.99
    image = made[CLASSES[0]][3]
    with open(image, "rb") as fh:
        r = client.post(
            "/search", files={"file": ("photo.jpg", fh, "image/jpeg")}, params={"group_by": "video"}
        )
    assert (
        r.status_code == 200
        and r.json()["hits"][0]["rel_path"] == image.relative_to(media).as_posix()
    )
    paths = [h["rel_path"] for h in r.json()["hits"]]
    assert len(paths) == len(set(paths))  # group_by=video: one hit per file


def test_search_takes_a_ranking_from_the_services_list(served, tmp_path):
    """ranking= names one of serve.rankings (default euclidean, par); any other is 422. Euclidean
    keeps every hit where PAR at δ = 1 keeps at most the query's own file."""
    client, media, index, made, _ = served
    rel = made[CLASSES[1]][2].relative_to(media).as_posix()
    eu = client.post(
        "/search", params={"path": rel, "k": 5, "ranking": "euclidean", "delta": 1.0}
    ).json()
    par = client.post(
        "/search", params={"path": rel, "k": 5, "ranking": "par", "delta": 1.0}
    ).json()
    assert eu["ranking"] == "euclidean" and all(h["kept"] for h in eu["hits"])
    assert [h["key"] for h in eu["hits"]] == [h["key"] for h in par["hits"]]
    assert len(par["hits"]) == 5 and not all(
        h["kept"] for h in par["hits"]
    )  # (the query itself may reach 1)
    refused = client.post("/search", params={"path": rel, "ranking": "cosine_magic"})
    assert refused.status_code == 422 and "offers: euclidean, par" in refused.text
    only_par = create_app(ServiceSettings(index_dir=str(index), rankings=("par",)))
    with TestClient(only_par, base_url="http://127.0.0.1") as c:
        assert c.post("/search", params={"path": rel, "ranking": "euclidean"}).status_code == 422
    with pytest.raises(ConfigError, match="serve.rankings"):
        ServiceSettings(index_dir=str(index), rankings=("nope",))
    ok(client)


def test_thumbnails_previews_stats_and_page(served):
    client, media, _, made, _ = served
    hits = client.post(
        "/search", params={"path": made[CLASSES[2]][2].relative_to(media).as_posix(), "k": 3}
    ).json()
    video = next(h for h in hits["hits"] if h["media_type"] == "video")
    thumb = client.get(f"/items/{video['key']}/thumbnail")
    assert (
        thumb.status_code == 200
        and thumb.headers["content-type"] == "image/jpeg"
        and thumb.content[:2] == b"\xff\xd8"
    )
    gif = client.get(f"/items/{video['key']}/preview")
    assert gif.status_code == 200 and gif.content[:6] == b"GIF89a"
    from PIL import Image

    assert Image.open(__import__("io").BytesIO(gif.content)).n_frames > 1  # animated: shows motion
    assert client.get("/items/nope/thumbnail").status_code == 404
    stats = client.get("/stats").json()
    assert stats["items"] > 0 and stats["dim"] == 1280 and stats["generation"]
    page = client.get("/")
    assert page.status_code == 200 and "<script>" in page.text and "cdn" not in page.text.lower()
    docs = client.get("/docs")
    assert "/swagger/swagger-ui-bundle.js" in docs.text and "cdn.jsdelivr" not in docs.text
    assert client.get("/swagger/swagger-ui-bundle.js").status_code == 200
    assert "/search" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("empty", 400),
        ("random", 415),
        ("text_as_mp4", 415),
        ("declared_2gb", 413),
        ("streamed_too_big", 413),
        ("traversal", 400),
        ("absolute_outside", 400),
        ("missing", 404),
        ("both", 400),
        ("neither", 400),
        ("k_too_big", 400),
        ("bad_delta", 422),
    ],
)
def test_bad_requests_get_clear_json_errors(served, case, status):
    import os

    client, media, _, made, _ = served
    upload = lambda data, name="q.mp4": {"files": {"file": (name, data, "video/mp4")}}  # noqa: E731
    requests = {
        "empty": upload(b""),
        "random": upload(os.urandom(4096)),
        "text_as_mp4": upload(b"this is a text file, not a video\n" * 20),
        "declared_2gb": {
            "content": b"x",
            "headers": {
                "content-length": str(2 * 2**30),
                "content-type": "multipart/form-data; boundary=x",
            },
        },
        "streamed_too_big": upload(os.urandom(6 * 2**20)),
        "traversal": {"params": {"path": "../../etc/passwd"}},
        "absolute_outside": {"params": {"path": "/etc/passwd"}},
        "missing": {"params": {"path": "nope/none.mp4"}},
        "both": {**upload(made[CLASSES[0]][0].read_bytes()), "params": {"path": "x.mp4"}},
        "neither": {},
        "k_too_big": {
            "params": {"path": made[CLASSES[0]][0].relative_to(media).as_posix(), "k": 1000}
        },
        "bad_delta": {
            "params": {"path": made[CLASSES[0]][0].relative_to(media).as_posix(), "delta": 3}
        },
    }
    r = client.post("/search", **requests[case])
    assert r.status_code == status, r.text
    assert isinstance(r.json().get("error") or r.json().get("detail"), (str, list))
    if case in ("traversal", "absolute_outside"):
        assert "outside the index's media root" in r.json()["error"]
    ok(client)


def test_rebuilt_index_is_picked_up_while_serving(served, tmp_path):
    client, media, index, _, base = served
    before = client.get("/stats").json()
    extra = write_video(media / "extra" / "new_clip.mp4", CLASSES[0], 1.0, seed=999)
    try:
        run_index(media, index, tmp_path / "run")
        after = client.get("/stats").json()
        assert after["generation"] != before["generation"] and after["items"] == before["items"] + 1
        r = client.post("/search", params={"path": "extra/new_clip.mp4", "k": 1})
        assert r.json()["hits"][0]["rel_path"] == "extra/new_clip.mp4"
        assert r.json()["generation"] == after["generation"]
    finally:
        shutil.rmtree(extra.parent)
        run_index(media, index, tmp_path / "run2")


def test_concurrent_clients(served):
    """8 clients x 25 searches, all answered (the worker pool queues what it can take)."""
    client, media, _, made, _ = served
    paths = [p.relative_to(media).as_posix() for c in CLASSES for p in made[c][:2]]

    def one_client(i: int) -> list[int]:
        return [
            client.post("/search", params={"path": paths[(i + j) % len(paths)], "k": 3}).status_code
            for j in range(25)
        ]

    with ThreadPoolExecutor(8) as pool:
        codes = [c for cs in pool.map(one_client, range(8)) for c in cs]
    assert codes == [200] * 200


def test_overload_answers_503_with_retry_after(served):
    """With every worker and queue place taken, a request is refused at once, not queued."""
    client, media, _, made, _ = served
    admission = client.app.state.admission
    for _ in range(admission.capacity):
        admission.inside += 1  # as if that many requests were running or waiting
    try:
        r = client.post(
            "/search", params={"path": made[CLASSES[0]][0].relative_to(media).as_posix()}
        )
        assert r.status_code == 503 and r.headers["retry-after"] and "busy" in r.json()["error"]
    finally:
        admission.inside -= admission.capacity
    ok(client)


def test_bearer_token(served):
    _, _, index, _, _ = served
    app = create_app(ServiceSettings(index_dir=str(index), token="s3cret"))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/stats").status_code == 401
        assert c.get("/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200


def test_serve_refuses_open_host_without_token(tmp_path):
    from omegaconf import OmegaConf

    from media_retrieval.errors import ConfigError
    from media_retrieval.serve.run import is_loopback, serve

    cfg = OmegaConf.create(
        {
            "index_dir": str(tmp_path),
            "host": "0.0.0.0",
            "token": None,
            "allow_unauthenticated": False,
        }
    )
    with pytest.raises(ConfigError, match="token"):
        serve(cfg)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_uploads_leave_no_files(served):
    client, media, _, made, _ = served
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("media-retrieval-uploads-*/*"))
    with open(made[CLASSES[1]][0], "rb") as fh:
        assert client.post("/search", files={"file": ("a.mp4", fh, "video/mp4")}).status_code == 200
    client.post("/search", files={"file": ("b.mp4", b"junk" * 100, "video/mp4")})
    assert set(Path(tempfile.gettempdir()).glob("media-retrieval-uploads-*/*")) == before
