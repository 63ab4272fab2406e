"""The service's web page in a real browser (headless Chromium, driven by Playwright): load
the page, upload a clip, see the result grid. Skips, saying why, where no Chromium exists
(``.ci/run`` installs it from the system package manager)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port
from helpers.media_library import CLASSES
from test_search import indexed_library

CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from media_retrieval.serve.app import ServiceSettings, create_app

    media, index, made = indexed_library(tmp_path_factory.mktemp("browser"))
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(ServiceSettings(index_dir=str(index))),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", made
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.mark.slow
def test_page_uploads_a_clip_and_shows_the_result_grid(server, tmp_path):
    if CHROMIUM is None:
        pytest.skip(
            "no Chromium on this machine (.ci/run installs it with apt-get install chromium)"
        )
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is a dev dependency (make env)"
    )
    url, made = server
    clip = made[CLASSES[2]][1]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_function(
            "document.getElementById('delta').value !== ''"
        )  # stats loaded: δ filled in
        assert "items" in page.inner_text("#stats")
        page.set_input_files("#file", str(clip))
        page.wait_for_selector(".card.result", timeout=60_000)
        cards = page.locator(".card.result")
        assert cards.count() == 12
        first = cards.first.inner_text()
        assert clip.name in first and "distance 0.000" in first
        assert "kept by PAR" in page.inner_text("#status")
        page.wait_for_function(
            "[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > "
            "0)",
            timeout=60_000,
        )  # previews (animated GIFs) and thumbnails arrived
        shot = Path(os.environ.get("MEDIA_RETRIEVAL_SCREENSHOT", tmp_path / "service.png"))
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert not errors, errors
        browser.close()
