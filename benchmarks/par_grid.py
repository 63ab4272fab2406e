"""PAR grid from saved embeddings: leave-one-out over N clips, every k x every δ, timed from
loading the embeddings file to writing results.json, results.md and best_delta.md.

    python benchmarks/par_grid.py [--n 10000] [--classes 50] [--dim 256]

Prints one JSON object. Target (issue 5): N = 10 000, 50 classes, k in {5, 10, 20, 50, 75, 100}
x 20 δ, every results.json metric, under 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from media_retrieval.reporting.tables import best_delta_table, write_json, write_markdown
from media_retrieval.retrieval.embeddings_io import load_embeddings, save_embeddings
from media_retrieval.retrieval.evaluate import EmbeddingSet, score_rows


def synthetic(n: int, classes: int, dim: int, seed: int = 0) -> EmbeddingSet:
    """Clustered unit-ish vectors: class centres plus noise (retrieval is hard but not random)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim))
    vec = centres[labels] + rng.normal(scale=2.5, size=(n, dim))  # Euclidean P@5 about 0.5
    both = np.ones(n, dtype=bool)
    seen = labels < classes // 2
    return EmbeddingSet(
        np.arange(n), torch.from_numpy(vec.astype(np.float32)), labels, seen, both, both
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--dim", type=int, default=256)
    args = ap.parse_args()
    ks = [5, 10, 20, 50, 75, 100]
    deltas = [round(x, 2) for x in np.linspace(0.0, 0.95, 20)]
    with tempfile.TemporaryDirectory() as tmp:
        path = save_embeddings(
            Path(tmp) / "emb.npz",
            synthetic(args.n, args.classes, args.dim),
            [f"c{i}" for i in range(args.classes)],
            ["synthetic"] * args.n,
        )
        t0 = time.perf_counter()
        emb, _, datasets, model = load_embeddings(path)
        t_load = time.perf_counter()
        rows = score_rows(emb, ks, deltas[10], deltas, model="synthetic")
        t_score = time.perf_counter()
        write_json(rows, Path(tmp) / "results.json")
        write_markdown(rows, Path(tmp) / "results.md", 5, deltas[10])
        best = best_delta_table(rows)
        (Path(tmp) / "best_delta.md").write_text(best)
        t_end = time.perf_counter()
    print(
        json.dumps(
            {
                "benchmark": "par_grid",
                "n_clips": args.n,
                "classes": args.classes,
                "dim": args.dim,
                "ks": ks,
                "n_deltas": len(deltas),
                "rows": len(rows),
                "torch_threads": torch.get_num_threads(),
                "seconds_total": round(t_end - t0, 3),
                "seconds_load": round(t_load - t0, 3),
                "seconds_score": round(t_score - t_load, 3),
                "seconds_write": round(t_end - t_score, 3),
            }
        )
    )
    print(best)


if __name__ == "__main__":
    main()
