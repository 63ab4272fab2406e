"""Training-free front ends on real footage, scored on validation only.

Before changing the default embedding's training-free part again, this asks whether two
generic tricks from the retrieval literature help the pooled frame statistics: power
normalisation (signed square root, Perronnin et al. 2010; Jégou & Chum 2012) and
L2-normalising each frame feature before pooling. Each variant is scored exactly as
``real_benchmark.py`` scores its validation: in every leave-one-source-out fold, each training
source is held out in turn (whitening fitted on the other training sources). No test fold's
score is read, so a winner here could become a default without tuning to the test folds.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/front_ends.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_benchmark as rb  # noqa: E402

from media_retrieval.data.folds import leave_one_source_out  # noqa: E402

VARIANTS = ("mean", "mean_std", "mean_std_sqrt", "mean_std_l2frames", "mean_std_l2frames_sqrt")


def front(x: torch.Tensor, variant: str) -> torch.Tensor:
    """(N, T, F) frame features -> (N, D): the variant's pooled statistics, each block
    L2-normalised."""
    nrm = torch.nn.functional.normalize
    if "l2frames" in variant:
        x = nrm(x, dim=-1)
    m, s = x.mean(1), x.std(1)
    if "sqrt" in variant:
        m, s = m.sign() * m.abs().sqrt(), s.sign() * s.abs().sqrt()
    if variant == "mean":
        return nrm(m, dim=-1)
    return torch.cat([nrm(m, dim=-1), nrm(s, dim=-1)], -1) / 2**0.5


def main() -> None:
    t0 = time.time()
    sources, feats, _ = rb.load_sources(rb.real_clips_dir(str(ROOT)), ROOT / ".cache" / "features")
    scores: dict[tuple[str, int | None], list[tuple[float, float]]] = {}
    for fold in leave_one_source_out(sources):
        for held in fold.train:
            inner = [it for s in fold.train if s != held for it in sources[s]]
            for v in VARIANTS:
                zi, zh = front(rb.stack(inner, feats), v), front(rb.stack(sources[held], feats), v)
                for d in rb.WHITEN:
                    eu = rb.pick(rb.score(rb.whitened(zi, zh, d), sources[held]), "euclidean")
                    scores.setdefault((v, d), []).append((eu["accuracy"], eu["map"]))
    rows = [
        {
            "variant": v,
            "whiten": d,
            "val_p_at_5": round(float(np.mean([a for a, _ in r])), 4),
            "val_map": round(float(np.mean([b for _, b in r])), 4),
            "pairs": len(r),
        }
        for (v, d), r in scores.items()
    ]
    for r in rows:
        print(
            f"{r['variant']:24s} whiten {str(r['whiten']):5s} P@5 {r['val_p_at_5']:.4f} mAP "
            f"{r['val_map']:.4f}"
        )
    out = {
        "command": "benchmarks/front_ends.py",
        "seconds": round(time.time() - t0, 1),
        "rows": rows,
    }
    (ROOT / "benchmarks" / "results" / "front_ends.json").write_text(
        json.dumps(out, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
