"""Do images find the videos they come from, per candidate default? (issue 28 item 2, issue 27
"defaults with their cost": the index default is chosen with this number in view.)

    PYTHONPATH=src python benchmarks/cross_media.py [--per-class 4] \\
        [--real-dir ../shared/data/real-clips]

Two corpora: the built-in corpus's ``style_b`` videos (``make demo`` writes them; motion
defines their classes, so a still cannot tell most of them apart and class P@5 from a still is
near chance by design: there the source-video figure is the one that matters), and real footage
(``ucf101-mini`` and ``jhmdb`` of the shared real clips, whose classes a still often shows).
For each video, the first ``--per-class`` per class, its middle frame is written as a JPEG
(quality 95, the video's own size): that is the still a user would take. Every file goes
through the index's own pipeline (``model.embed_file``: an image is a still clip, its frame
repeated), ranked by Euclidean distance as the index ranks.

Reported per candidate:

- ``i2v_p5``: a still queries the videos; P@5 by class.
- ``i2v_source5``: the still's own video is among those 5.
- ``v2i_p5``: a video queries the stills; P@5 by class.
- ``v2v_p5`` / ``i2i_p5``: within one media type (leave-one-out), for reference.
- ``mixed_cross5``: in one gallery of videos and stills (the query left out), the share of the
  top 5 that is of the other media type. Half the gallery is of each type, so a model that
  ranks by content and not by media type is near 0.5 here; 0 means an image finds only images.

Candidates: ``lite0_mean`` (``model.temporal.cell=none model.temporal.stats=[mean]``: the fix
that index and search name when a model embeds images apart), ``lite0_mean_std`` (the configured
cnn_lstm with ``model.temporal.cell=none``: what ``src/index.py`` indexed without a checkpoint
before), ``i3d`` (``model=i3d``, pooled features) and ``lite0_mean+i3d`` (the two
L2-normalised and joined: the training-free fusion, as an index could hold it).
Writes ``benchmarks/results/cross_media.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from media_retrieval.config.paths import real_clips_dir
from media_retrieval.models.cnn_lstm import CNNLSTM
from media_retrieval.models.i3d import I3DModule

ROOT = Path(__file__).resolve().parents[1]
K = 5
REAL_SETS = ("ucf101-mini", "jhmdb")


def videos(root: Path, per_class: int) -> list[tuple[Path, str]]:
    """The first ``per_class`` videos of each class folder under ``root``, with their class."""
    out = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in cls.iterdir() if p.suffix.lower() in (".mp4", ".avi"))
        out += [(p, cls.name) for p in files[:per_class]]
    return out


def middle_still(video: Path, out: Path) -> Path:
    with av.open(str(video)) as box:
        frames = [f.to_image() for f in box.decode(video=0)]
    frames[len(frames) // 2].convert("RGB").save(out, quality=95)
    return out


def candidates() -> dict[str, torch.nn.Module]:
    def lite0(stats: list[str]) -> CNNLSTM:
        return CNNLSTM(
            backbone={"name": "efficientnet_lite0", "weights": "imagenet"},
            temporal={"cell": "none", "stats": stats},
            whiten=None,
            name="lite0",
        ).eval()

    return {
        "lite0_mean": lite0(["mean"]),
        "lite0_mean_std": lite0(["mean", "std"]),
        "i3d": I3DModule(features="pooled").eval(),
    }


def p_at_k(
    q: np.ndarray,
    g: np.ndarray,
    q_lab: list[str],
    g_lab: list[str],
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(P@K per query, the top-K gallery indices per query) by Euclidean distance."""
    d = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    if exclude is not None:
        d[exclude] = np.inf
    top = np.argsort(d, axis=1, kind="stable")[:, :K]
    gl = np.asarray(g_lab)
    hits = gl[top] == np.asarray(q_lab)[:, None]
    return hits.mean(1), top


def scores(v: np.ndarray, s: np.ndarray, labels: list[str]) -> dict[str, float]:
    n = len(labels)
    eye = np.eye(n, dtype=bool)
    i2v, top_i2v = p_at_k(s, v, labels, labels)
    v2i, _ = p_at_k(v, s, labels, labels)
    v2v, _ = p_at_k(v, v, labels, labels, exclude=eye)
    i2i, _ = p_at_k(s, s, labels, labels, exclude=eye)
    both = np.concatenate([v, s])
    kind = np.array([0] * n + [1] * n)
    _, top_mixed = p_at_k(
        both, both, labels + labels, labels + labels, exclude=np.eye(2 * n, dtype=bool)
    )
    cross = (kind[top_mixed] != kind[:, None]).mean(1)
    return {
        "i2v_p5": float(i2v.mean()),
        "i2v_source5": float(np.mean([i in top_i2v[i] for i in range(n)])),
        "v2i_p5": float(v2i.mean()),
        "v2v_p5": float(v2v.mean()),
        "i2i_p5": float(i2i.mean()),
        "mixed_cross5": float(cross.mean()),
        "mixed_cross5_image_queries": float(cross[n:].mean()),
    }


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def run_corpus(
    name: str, items: list[tuple[Path, str]], models: dict[str, torch.nn.Module]
) -> dict:
    labels = [c for _, c in items]
    with tempfile.TemporaryDirectory() as tmp:
        stills = [middle_still(p, Path(tmp) / f"{i:04d}.jpg") for i, (p, _) in enumerate(items)]
        vecs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for mname, model in models.items():
            t = time.perf_counter()
            v = np.stack([model.embed_file(str(p)).float().numpy() for p, _ in items])
            s = np.stack([model.embed_file(str(p)).float().numpy() for p in stills])
            vecs[mname] = (v, s)
            print(
                f"{name}: {mname} embedded {2 * len(items)} files in {time.perf_counter() - t:.0f} "
                "s",
                flush=True,
            )
    vecs["lite0_mean+i3d"] = tuple(
        np.concatenate([unit(vecs["lite0_mean"][j]), unit(vecs["i3d"][j])], 1) for j in (0, 1)
    )
    return {
        "corpus": name,
        "videos": len(items),
        "classes": len(set(labels)),
        "rows": {m: scores(v, s, labels) for m, (v, s) in vecs.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--builtin", type=Path, default=ROOT / "data" / "builtin" / "style_b")
    ap.add_argument("--real-dir", type=Path, default=Path(real_clips_dir(str(ROOT))))
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "cross_media.json"
    )
    args = ap.parse_args()
    if not args.builtin.is_dir():
        raise SystemExit(
            f"error: no built-in corpus at {args.builtin}: run `make demo` first (it writes it)"
        )
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    models = candidates()
    corpora = [run_corpus("builtin style_b", videos(args.builtin, args.per_class), models)]
    if args.real_dir.is_dir():
        real = [it for s in REAL_SETS for it in videos(args.real_dir / s, args.per_class)]
        corpora.append(run_corpus("real: " + " + ".join(REAL_SETS), real, models))
    else:
        print(f"real footage not found at {args.real_dir}: built-in corpus only")
    result = {
        "command": f"PYTHONPATH=src python benchmarks/cross_media.py --per-class {args.per_class}",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "corpora": corpora,
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(
        "| corpus | candidate | image→video P@5 | image→its video in top 5 | video→image P@5 | "
        "video→video P@5 | "
        "image→image P@5 | other media type in a mixed top 5 (all / image queries) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in corpora:
        for m, r in c["rows"].items():
            print(
                f"| {c['corpus']} ({c['videos']} videos, {c['classes']} classes) | {m} | "
                f"{r['i2v_p5']:.3f} | "
                f"{r['i2v_source5']:.3f} | {r['v2i_p5']:.3f} | {r['v2v_p5']:.3f} | "
                f"{r['i2i_p5']:.3f} | "
                f"{r['mixed_cross5']:.3f} / {r['mixed_cross5_image_queries']:.3f} |"
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
