"""Warm service queries vs one command-line search per query, on a 1 000-item index.

Builds (once, cached under ``--work``) a library of generated clips and images and indexes it
with the no-training model (ImageNet Lite0, its default 16-frame clips at 224 px), starts the
service (uvicorn, over HTTP on 127.0.0.1), and measures:

- latency p50 / p95 of clip queries and image queries (uploads, one client at a time),
- throughput with 4 concurrent clients (clip uploads),
- the command line's cost per query: ``media-retrieval search`` in a fresh process (start-up,
  imports, model and index loading, then the query), the way a script would call it.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/serve.py [--items 1000] [--queries 30]

One JSON line on stdout; ``benchmarks/results/serve.json`` keeps it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def make_library(root: Path, items: int) -> tuple[list[Path], list[Path]]:
    """A fifth videos (1-2 s), the rest images, across the test helpers' synthetic classes."""
    from helpers.media_library import CLASSES, write_image, write_video

    videos, images = [], []
    n_videos = items // 5
    for i in range(items):
        c = CLASSES[i % len(CLASSES)]
        if i < n_videos:
            p = root / c / f"v{i:04d}.mp4"
            videos.append(p if p.exists() else write_video(p, c, 1.0 + (i % 2), seed=i))
        else:
            p = root / c / f"i{i:04d}.png"
            images.append(p if p.exists() else write_image(p, c, seed=i))
    return videos, images


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--cli-queries", type=int, default=3)
    p.add_argument("--work", default=str(ROOT / ".cache" / "serve_bench"))
    args = p.parse_args(argv)
    import httpx
    import uvicorn

    from media_retrieval.retrieval.media_index import MediaIndex
    from media_retrieval.serve.app import ServiceSettings, create_app

    work = Path(args.work)
    media, index_dir = work / "media", work / f"index-{args.items}"
    videos, images = make_library(media, args.items)
    t0 = time.time()
    MediaIndex.build(media, index_dir).close()  # incremental: a rerun embeds nothing new
    build_s = time.time() - t0

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServiceSettings(index_dir=str(index_dir)))
    n_items = len(app.state.index.segments)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/search"
    rng = np.random.default_rng(0)

    def query(client: httpx.Client, path: Path) -> float:
        t = time.perf_counter()
        with open(path, "rb") as fh:
            r = client.post(url, files={"file": (path.name, fh)}, params={"k": 10})
        r.raise_for_status()
        return time.perf_counter() - t

    with httpx.Client(timeout=120) as client:
        query(client, videos[0])  # warm-up (first-call allocations)
        clip_s = [query(client, videos[i]) for i in rng.integers(0, len(videos), args.queries)]
        image_s = [query(client, images[i]) for i in rng.integers(0, len(images), args.queries)]

    def client_run(seed: int) -> int:
        r = np.random.default_rng(seed)
        with httpx.Client(timeout=120) as c:
            for i in r.integers(0, len(videos), args.queries // 2):
                query(c, videos[i])
        return args.queries // 2

    t = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        done = sum(pool.map(client_run, range(4)))
    throughput = done / (time.perf_counter() - t)
    server.should_exit = True

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PROJECT_ROOT": str(work)}
    cli_s = []
    for i in rng.integers(0, len(videos), args.cli_queries):
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "media_retrieval",
                "search",
                f"index_dir={index_dir}",
                f"query={videos[i]}",
                "output=json",
                "k=10",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        cli_s.append(time.perf_counter() - t)
    result = {
        "items": n_items,
        "index_build_s": round(build_s, 1),
        "queries": args.queries,
        "clip_p50_ms": round(1000 * statistics.median(clip_s), 1),
        "clip_p95_ms": round(1000 * percentile(clip_s, 95), 1),
        "image_p50_ms": round(1000 * statistics.median(image_s), 1),
        "image_p95_ms": round(1000 * percentile(image_s, 95), 1),
        "clip_throughput_4_clients_qps": round(throughput, 2),
        "cli_per_query_s": round(statistics.mean(cli_s), 2),
        "speedup_clip_p50_vs_cli": round(statistics.mean(cli_s) / statistics.median(clip_s), 1),
        "machine": f"{os.cpu_count()} CPU cores",
        "command": "benchmarks/serve.py " + " ".join(argv or sys.argv[1:]),
    }
    out = ROOT / "benchmarks" / "results" / "serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
