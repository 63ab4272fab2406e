"""Search backends at scale: build time, memory, queries/s, recall@10 against exact, PCA.

Synthetic: N clustered vectors (d = 256) whose noise is calibrated so the *exact* top-10 class
purity is at most 0.8 (overlapping classes, as real embeddings are, not trivially separable).
Real: embeddings saved by ``src/eval.py save_embeddings=true`` (the built-in corpus), replicated
with noise to N rows; and P@5 with / without PCA on the real ones.

    python benchmarks/search_scale.py --sizes 10000 100000 1000000 \\
        --real logs/eval/runs/<run>/retrieval/embeddings.npz
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from media_retrieval.retrieval.backends import VectorSearcher  # noqa: E402


def clustered(
    n: int, d: int, latent: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class centres, labels and noise (x = centres[labels] + sigma * noise), ~100 per class.

    Centres and noise live in a random ``latent``-dimensional subspace of R^d (plus 1 %
    isotropic noise): embeddings are low-rank (the built-in corpus's keep 90 % of their variance
    in 14 of 256 dimensions), and full-rank Gaussian noise is the worst case for every
    approximate method (``--latent 256`` measures it)."""
    rng = np.random.default_rng(seed)
    classes = max(10, n // 100)
    basis = np.linalg.qr(rng.standard_normal((d, latent)))[0].T.astype(np.float32)  # (latent, d)
    centers = rng.normal(0, 1, (classes, latent)).astype(np.float32) @ basis
    labels = rng.integers(0, classes, n)
    noise = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        noise[s : s + m] = rng.standard_normal((m, latent), dtype=np.float32) @ basis
        noise[s : s + m] += 0.01 * rng.standard_normal((m, d), dtype=np.float32)
    return centers, labels, noise


def purity(x: np.ndarray, labels: np.ndarray, q_idx: np.ndarray, k: int = 10) -> float:
    """Share of the exact top-k (self excluded) that are of the query's class."""
    from media_retrieval.retrieval.distances import topk_euclidean

    xt = torch.from_numpy(x)
    _, idx = topk_euclidean(xt[q_idx], xt, k + 1)
    idx = idx[:, 1:].numpy()
    return float((labels[idx] == labels[q_idx, None]).mean())


def calibrate(
    centers, labels, noise, target: float = 0.8, seed: int = 0
) -> tuple[float, np.ndarray]:
    """Smallest noise scale with exact top-10 purity <= target (bisection on a query sample)."""
    q_idx = np.random.default_rng(seed).choice(len(labels), 200, replace=False)
    lo, hi = 0.0, 4.0
    base = centers[labels]
    for _ in range(10):
        mid = (lo + hi) / 2
        p = purity(base + mid * noise, labels, q_idx)
        lo, hi = (mid, hi) if p > target else (lo, mid)
    x = base + hi * noise
    return hi, x


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def time_queries(
    s: VectorSearcher, q: np.ndarray, k: int, singles: int
) -> tuple[float, float, np.ndarray]:
    t = time.perf_counter()
    _, _, idx = s.search(q, k)
    batch_qps = len(q) / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(singles):
        s.search(q[i : i + 1], k)
    single_qps = singles / (time.perf_counter() - t)
    return batch_qps, single_qps, idx


def recall(idx: np.ndarray, ref: np.ndarray) -> float:
    return float(
        np.mean(
            [len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(idx, ref, strict=True)]
        )
    )


def precision_at(idx: np.ndarray, labels: np.ndarray, q_idx: np.ndarray, k: int) -> float:
    """P@k with the query itself removed from its own results (leave-one-out)."""
    out = []
    for row, qi in zip(idx, q_idx, strict=True):
        row = [i for i in row.tolist() if i != qi][:k]
        out.append(np.mean(labels[row] == labels[qi]))
    return float(np.mean(out))


def run_size(
    x: np.ndarray,
    labels: np.ndarray,
    backends: list[dict],
    n_queries: int,
    singles: int,
    seed: int = 0,
) -> list[dict]:
    rng = np.random.default_rng(seed + 1)
    q_idx = rng.choice(len(x), n_queries, replace=False)
    q = x[q_idx] + 0.05 * rng.standard_normal((n_queries, x.shape[1]), dtype=np.float32)
    rows, ref = [], None
    for spec in backends:
        gc.collect()
        name, options = spec["backend"], spec.get("options", {})
        t = time.perf_counter()
        s = VectorSearcher.build(x, name, options, pca_variance=spec.get("pca"))
        engine_dir = None
        if name == "milvus":  # Milvus Lite in a temporary file: the collection is written here
            engine_dir = tempfile.TemporaryDirectory()
            publish_generation(s, Path(engine_dir.name), "gen-000001", milvus_rows(len(x)))
        build_s = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            s.save(Path(tmp))
            disk = dir_mb(Path(tmp)) + (x.nbytes / 2**20 if name == "exact" else 0)
        if engine_dir is not None:
            disk = dir_mb(Path(engine_dir.name))
        # search-time knobs (nprobe, ef_search) need no rebuild
        for label, knobs in spec.get("variants", {spec.get("label", name): {}}).items():
            for key, value in knobs.items():
                setattr(s.backend.options, key, value)
            if hasattr(s.backend, "_tune"):
                s.backend._tune()
            bq, sq, idx = time_queries(s, q, 11, singles)
            if ref is None:
                ref = idx
            rows.append(
                {
                    "N": len(x),
                    "backend": label,
                    "build_s": round(build_s, 2),
                    "index_mb": round(disk, 1),
                    "qps_batch": round(bq, 1),
                    "qps_single": round(sq, 1),
                    "recall@10": round(recall(idx[:, :10], ref[:, :10]), 4),
                    "P@5": round(precision_at(idx, labels, q_idx, 5), 4),
                    "pca_dim": s.pca.dim if s.pca is not None else x.shape[1],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        if (
            engine_dir is not None
        ):  # an update that changes 1 % of the segments: upserts, not a rewrite
            changed = milvus_rows(len(x), changed_every=100)
            t = time.perf_counter()
            publish_generation(s, Path(engine_dir.name), "gen-000002", changed)
            rows[-1]["update_1pct_s"] = round(time.perf_counter() - t, 2)
            rows[-1]["update_rows"] = s.backend.changes
            print(
                json.dumps({"update_1pct_s": rows[-1]["update_1pct_s"], **s.backend.changes}),
                flush=True,
            )
        del s
        if engine_dir is not None:
            engine_dir.cleanup()
    return rows


BENCH_MANIFEST = {"fingerprint": "0" * 24}


def publish_generation(s: VectorSearcher, root: Path, name: str, segments: list) -> None:
    """What ``IndexStore.write_generation`` does around a Milvus publish, minus the vectors
    and weights: the generation's manifest and segment table, ``CURRENT``, activation."""
    import sqlite3

    s.publish(root, name, segments, BENCH_MANIFEST)
    gen = root / name
    gen.mkdir()
    (gen / "manifest.json").write_text(json.dumps(BENCH_MANIFEST))
    con = sqlite3.connect(gen / "metadata.sqlite")
    con.execute("CREATE TABLE segments (row INTEGER PRIMARY KEY, key, rel_path, start_s, end_s)")
    con.executemany(
        "INSERT INTO segments VALUES (?, ?, ?, ?, ?)",
        [(i, g.key, g.rel_path, g.start_s, g.end_s) for i, g in enumerate(segments)],
    )
    con.commit()
    con.close()
    (root / "CURRENT").write_text(name)
    s.activate(root, name)


def milvus_rows(n: int, changed_every: int = 0) -> list:
    """Stand-ins for the segments whose metadata a Milvus collection holds; every
    ``changed_every``-th one with new content (a new key) for an update."""
    from types import SimpleNamespace

    return [
        SimpleNamespace(
            key=f"{i:016x}" + ("-v2" if changed_every and i % changed_every == 0 else ""),
            rel_path=f"library/clip_{i}.mp4",
            media_type="video",
            start_s=None,
            end_s=None,
        )
        for i in range(n)
    ]


def backends_for(n: int) -> list[dict]:
    nlist = 1024 if n >= 500_000 else max(16, min(int(4 * np.sqrt(n)), n // 39))
    out = [
        {"backend": "exact"},
        {"backend": "flat"},
        {
            "backend": "ivf",
            "options": {"nlist": nlist},
            "variants": {f"ivf{nlist},nprobe={p}": {"nprobe": p} for p in (8, 16, 32, 64, 128)},
        },
        {
            "backend": "hnsw",
            "options": {"hnsw_m": 32, "ef_construction": 80},
            "variants": {f"hnsw32,ef={e}": {"ef_search": e} for e in (32, 64, 128, 256)},
        },
        {
            "backend": "ivfpq",
            "options": {"nlist": nlist, "pq_m": 32},
            "variants": {f"ivfpq{nlist},m=32,nprobe={p}": {"nprobe": p} for p in (16, 64)},
        },
        {"backend": "exact", "label": "exact+pca0.9", "pca": 0.9},
        {"backend": "milvus", "label": "milvus-lite FLAT", "options": {"milvus_index": "FLAT"}},
        {"backend": "milvus", "label": "milvus-lite HNSW", "options": {"milvus_index": "HNSW"}},
    ]
    if (
        n > 200_000
    ):  # Milvus Lite's HNSW build at 10^6 takes as long as FAISS's (minutes): its FLAT only
        out = out[:-1]
    return out


def real_rows(path: Path, n: int | None, n_queries: int, singles: int) -> list[dict]:
    """The built-in corpus's test pool: P@5 full vs PCA(0.9), then replicated with noise to n."""
    with np.load(path, allow_pickle=False) as z:
        x, labels = z["vectors"].astype(np.float32), z["labels"]
    rows = []
    q_idx = np.arange(len(x))
    for pca in (None, 0.9):
        s = VectorSearcher.build(x, "exact", pca_variance=pca)
        _, _, idx = s.search(x, 6)
        rows.append(
            {
                "N": len(x),
                "backend": "real: exact" + (" + pca0.9" if pca else ""),
                "pca_dim": s.pca.dim if s.pca else x.shape[1],
                "variance_kept": round(float(s.pca.explained.sum()), 4) if s.pca else 1.0,
                "P@5": round(precision_at(idx, labels, q_idx, 5), 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if n:
        rng = np.random.default_rng(0)
        reps = rng.integers(0, len(x), n)
        scale = x.std(0, keepdims=True)
        big = x[reps] + scale * rng.standard_normal((n, x.shape[1]), dtype=np.float32)
        for r in run_size(
            big, labels[reps], backends_for(n)[:3] + backends_for(n)[-1:], n_queries, singles
        ):
            r["backend"] = "real x noise: " + r["backend"]
            rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument(
        "--latent", type=int, default=32, help="intrinsic dimension of the synthetic vectors"
    )
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--singles", type=int, default=200)
    ap.add_argument(
        "--real",
        type=Path,
        default=None,
        help="embeddings.npz from src/eval.py save_embeddings=true",
    )
    ap.add_argument("--real-n", type=int, default=100_000)
    ap.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="backends to run (exact flat ivf hnsw ivfpq pca milvus)",
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/search_scale.json"))
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}", flush=True)
    rows = []
    for n in args.sizes:
        centers, labels, noise = clustered(n, args.dim, args.latent)
        sigma, x = calibrate(centers, labels, noise)
        del noise
        q_pur = np.random.default_rng(5).choice(n, 200, replace=False)
        print(
            f"N={n}, latent {args.latent}: noise sigma={sigma:.3f}, exact top-10 purity "
            f"{purity(x, labels, q_pur):.3f}",
            flush=True,
        )
        specs = [
            b
            for b in backends_for(n)
            if args.only is None or ("pca" if b.get("pca") else b["backend"]) in args.only
        ]
        rows += run_size(x, labels, specs, args.queries, args.singles)
        del x
    if args.real is not None:
        rows += real_rows(args.real, args.real_n, args.queries, args.singles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"peak RSS {rss_mb():.0f} MB; rows written to {args.out}")


if __name__ == "__main__":
    main()
