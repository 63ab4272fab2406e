"""Chunked Euclidean top-k vs a bare chunked matrix multiply: time and extra memory.

    python benchmarks/chunked_distance.py [--queries 20000] [--gallery 200000] [--dim 256] [--k 100]

Prints one JSON object. Target (issue 5): 20 000 x 200 000 x 256-d with under 2 GB extra RAM at
close to matrix-multiply speed. "Extra" = peak RSS minus RSS once the inputs exist.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from media_retrieval.retrieval.distances import topk_euclidean


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--gallery", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=100)
    args = ap.parse_args()
    torch.manual_seed(0)
    q = torch.randn(args.queries, args.dim)
    g = torch.randn(args.gallery, args.dim)
    base = rss_mb()
    rows = max(1, (256 << 20) // (g.shape[0] * 4))
    t0 = time.perf_counter()
    for start in range(0, q.shape[0], rows):  # the floor: the same multiplies, nothing else
        q[start : start + rows] @ g.T
    t_mm = time.perf_counter() - t0
    t0 = time.perf_counter()
    d, i = topk_euclidean(q, g, args.k)
    t_topk = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # spot-check against a direct computation for a few queries
    exact = torch.cdist(q[:5].double(), g.double()).topk(args.k, largest=False).values.float()
    print(
        json.dumps(
            {
                "benchmark": "chunked_distance",
                "queries": args.queries,
                "gallery": args.gallery,
                "dim": args.dim,
                "k": args.k,
                "torch_threads": torch.get_num_threads(),
                "seconds_matmul_only": round(t_mm, 2),
                "seconds_topk_euclidean": round(t_topk, 2),
                "ratio_to_matmul": round(t_topk / t_mm, 2),
                "extra_peak_rss_mb": round(peak - base, 1),
                "max_abs_error_vs_cdist": float((d[:5] - exact).abs().max()),
                "shape": list(i.shape),
            }
        )
    )


if __name__ == "__main__":
    main()
