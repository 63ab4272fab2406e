"""What a clip costs to embed on this machine's CPU, per encoder (issue 27, "defaults with their
cost"): Lite0 (16 frames, mean of frame features: the no-training baseline), I3D (16 frames,
Kinetics-400) and the fused ``cnn_lstm_i3d`` (both encoders on one decode, plus the LSTM),
decoding included and excluded.

    PYTHONPATH=src python benchmarks/encoder_cost.py [--clips 24] \\
        [--real-dir ../shared/data/real-clips]

Clips: the first ``--clips`` of the shared real sets, taken round-robin over the sets (real
codecs and sizes). Decoding: :func:`load_clip` with each encoder's own clip spec (16 frames,
224 px, its normalisation). Embedding: ``model.embed`` on batches of 1 and 8 decoded clips,
after one warm-up batch, in the threads torch uses here. Writes
``benchmarks/results/encoder-cost-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from media_retrieval.config.paths import real_clips_dir
from media_retrieval.data.clips import ClipSpec, load_clip
from media_retrieval.models.cnn_lstm import CNNLSTM
from media_retrieval.models.i3d import I3DModule

ROOT = Path(__file__).resolve().parents[1]


def clips(real_dir: Path, n: int) -> list[Path]:
    per_set = [
        sorted(p for p in s.rglob("*") if p.suffix in (".mp4", ".avi"))
        for s in sorted(real_dir.iterdir())
        if s.is_dir()
    ]
    out: list[Path] = []
    while len(out) < n and any(per_set):
        for files in per_set:
            if files and len(out) < n:
                out.append(files.pop(0))
    return out


def measure(name: str, model: torch.nn.Module, spec: ClipSpec, paths: list[Path]) -> dict:
    model.eval()
    t = time.perf_counter()
    decoded = [load_clip(str(p), spec) for p in paths]
    decode_s = (time.perf_counter() - t) / len(paths)
    out = {"encoder": name, "decode_s_per_clip": round(decode_s, 4)}
    with torch.inference_mode():
        for batch in (1, 8):
            model.embed({"clip": torch.stack(decoded[:batch])})  # warm-up
            t = time.perf_counter()
            for s in range(0, len(decoded) - batch + 1, batch):
                model.embed({"clip": torch.stack(decoded[s : s + batch])})
            n = (len(decoded) // batch) * batch
            embed_s = (time.perf_counter() - t) / n
            out[f"embed_s_per_clip_batch{batch}"] = round(embed_s, 4)
            out[f"clips_per_s_batch{batch}_decode_excluded"] = round(1 / embed_s, 2)
            out[f"clips_per_s_batch{batch}_decode_included"] = round(1 / (embed_s + decode_s), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--real-dir", type=Path, default=Path(real_clips_dir(str(ROOT))))
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "encoder-cost-cpu.json"
    )
    args = ap.parse_args()
    paths = clips(args.real_dir, args.clips)
    lite0 = CNNLSTM(
        backbone={"name": "efficientnet_lite0", "weights": "imagenet"},
        temporal={"cell": "none"},
        name="lite0_mean",
    )
    i3d = I3DModule(features="logits")
    fused = CNNLSTM(
        backbone={"name": "efficientnet_lite0", "weights": "imagenet"},
        temporal={"cell": "lstm", "stats": ["mean", "std"], "fusion_weight": 0.25},
        video={"name": "i3d", "features": "both", "weight": 1.0},
        name="cnn_lstm_i3d",
    )
    rows = [
        measure(
            "lite0-16 (mean of frame features)", lite0, ClipSpec(frames=16, chunk_s=None), paths
        ),
        measure(
            "i3d-16 (Kinetics-400 logits)",
            i3d,
            ClipSpec(frames=16, chunk_s=None, normalize="inception"),
            paths,
        ),
        measure(
            "cnn_lstm_i3d-16 (Lite0 statistics + LSTM + I3D, the fused model)",
            fused,
            ClipSpec(frames=16, chunk_s=None),
            paths,
        ),
    ]
    result = {
        "command": "PYTHONPATH=src python benchmarks/encoder_cost.py " + f"--clips {args.clips}",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}",
        "clips": [str(p.relative_to(args.real_dir)) for p in paths],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(
        "| encoder | decode s/clip | embed s/clip (batch 1 / 8) | clips/s, decode excluded (b8) | "
        "clips/s, "
        "decode included (b8) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['encoder']} | {r['decode_s_per_clip']:.3f} | {r['embed_s_per_clip_batch1']:.3f} "
            "/ "
            f"{r['embed_s_per_clip_batch8']:.3f} | {r['clips_per_s_batch8_decode_excluded']:.2f} | "
            f"{r['clips_per_s_batch8_decode_included']:.2f} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
