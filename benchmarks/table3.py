"""The paper's Table III for our models: parameters, checkpoint size, CPU time to embed one
clip, and time per training epoch on the built-in corpus.

    python benchmarks/table3.py [--runs 5] [--c3d-epoch-batches 3]

torch threads = 2, batch 1, median of --runs timed runs after one warm-up. cnn_lstm embeds
16x224x224x3 (Lite0 on 16 frames + LSTM); C3D at 16x224x224x3 (through its adaptive pooling)
and at its native 16x112x112x3. Epochs: cnn_lstm's is measured on cached features; C3D's is
extrapolated from the median time of a few real training steps (batch 4 at 112 px, the
paper's Table I), which the output says.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import torch

from media_retrieval.models.c3d import C3DModule
from media_retrieval.models.cnn_lstm import CNNLSTM

PAPER = {
    "cnn_lstm": {"params_m": 4.5, "size_mb": 22.5, "embed_s": 0.8, "train_h_4500": 2.7},
    "c3d": {"params_m": 46.0, "size_mb": 305.17, "embed_s": 1.2, "train_h_4500": 16.0},
}


def median_seconds(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ckpt_mb(model: torch.nn.Module) -> float:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--out", default="benchmarks/results/table3.json", help="JSON for src/report.py ('' = none)"
    )
    ap.add_argument("--c3d-epoch-batches", type=int, default=3)
    ap.add_argument("--train-clips", type=int, default=162, help="built-in corpus training clips")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    from omegaconf import OmegaConf

    default = OmegaConf.load(
        Path(__file__).resolve().parents[1] / "configs" / "model" / "cnn_lstm.yaml"
    )
    cnn = CNNLSTM(
        {"name": "efficientnet_lite0", "weights": "imagenet", "in_chans": 3},
        OmegaConf.to_container(default.temporal),
        num_classes=6,
        whiten=default.get("whiten"),
    ).eval()
    c3d = C3DModule(num_classes=6).eval()
    cnn.backbone.to(memory_format=torch.channels_last)
    out = {
        "benchmark": "table3",
        "torch_threads": torch.get_num_threads(),
        "runs": args.runs,
        "models": {},
    }
    with torch.inference_mode():
        clip224 = {"clip": torch.randn(1, 16, 3, 224, 224)}
        clip112 = {"clip": torch.randn(1, 16, 3, 112, 112)}
        out["models"]["cnn_lstm"] = {
            "params_m": round(sum(p.numel() for p in cnn.parameters()) / 1e6, 2),
            "trainable_params_m": round(
                sum(p.numel() for p in cnn.parameters() if p.requires_grad) / 1e6, 2
            ),
            "checkpoint_mb": round(ckpt_mb(cnn), 1),
            "embed_s_16x224": round(
                median_seconds(
                    lambda: cnn.embed({"clip": clip224["clip"].contiguous()}), args.runs
                ),
                3,
            ),
        }
        out["models"]["c3d"] = {
            "params_m": round(sum(p.numel() for p in c3d.parameters()) / 1e6, 2),
            "checkpoint_mb": round(ckpt_mb(c3d), 1),
            "embed_s_16x224": round(median_seconds(lambda: c3d.embed(clip224), args.runs), 3),
            "embed_s_16x112": round(median_seconds(lambda: c3d.embed(clip112), args.runs), 3),
        }
        # the other models: size and embedding time (e2e = cnn_lstm's network, all of it trained)
        from media_retrieval.models.video3d import Video3DModule

        for name in ("r2plus1d", "x3d_xs"):
            m = Video3DModule(arch=name, num_classes=6).eval()
            out["models"][name] = {
                "params_m": round(sum(p.numel() for p in m.parameters()) / 1e6, 2),
                "checkpoint_mb": round(ckpt_mb(m), 1),
                "embed_s_16x224": round(median_seconds(lambda m=m: m.embed(clip224), args.runs), 3),
                "embed_s_16x112": round(median_seconds(lambda m=m: m.embed(clip112), args.runs), 3),
            }
        out["models"]["cnn_lstm_e2e"] = {
            **{
                k: out["models"]["cnn_lstm"][k]
                for k in ("params_m", "checkpoint_mb", "embed_s_16x224")
            },
            "trainable_params_m": out["models"]["cnn_lstm"]["params_m"],
        }
    # training epochs
    cnn.train()
    cnn.set_classes([str(i) for i in range(6)])
    opt = cnn.configure_optimizers()
    feats = torch.randn(64, 16, 1280)
    target = torch.randint(0, 6, (64,))

    def cnn_step():
        loss, _ = cnn._classify({"target": target}, cnn.encode_parts({"features": feats})[1])
        opt.zero_grad()
        loss.backward()
        opt.step()

    steps = -(-args.train_clips // 64)
    out["models"]["cnn_lstm"]["epoch_s_builtin"] = round(
        median_seconds(cnn_step, args.runs) * steps, 3
    )
    c3d.train()
    c3d_opt = c3d.configure_optimizers()
    batch = {"clip": torch.randn(4, 16, 3, 112, 112), "target": torch.randint(0, 6, (4,))}

    def c3d_step():
        loss, _ = c3d._classify(batch, c3d.embed(batch))
        c3d_opt.zero_grad()
        loss.backward()
        c3d_opt.step()

    step = median_seconds(c3d_step, args.c3d_epoch_batches)
    out["models"]["c3d"]["epoch_s_builtin_extrapolated"] = round(
        step * -(-args.train_clips // 4), 1
    )
    out["models"]["c3d"]["train_step_s_batch4_112"] = round(step, 2)
    c, k = out["models"]["cnn_lstm"], out["models"]["c3d"]
    out["embed_speedup_16x224"] = round(k["embed_s_16x224"] / c["embed_s_16x224"], 2)
    out["paper"] = PAPER
    print(json.dumps(out))
    if args.out:  # read by src/report.py for its Table III
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out))
    rows = [
        "| | cnn_lstm (ours) | C3D (ours) | paper 2D CNN + LSTM | paper 3D CNN |",
        "|---|---|---|---|---|",
        f"| parameters | {c['params_m']} M ({c['trainable_params_m']} M trained) | {k['params_m']} "
        "M "
        "| 4.5 M | 46 M |",
        f"| checkpoint size | {c['checkpoint_mb']} MB | {k['checkpoint_mb']} MB | 22.5 MB | 305.17 "
        "MB |",
        f"| CPU embed, 16x224x224x3 | {c['embed_s_16x224']} s | {k['embed_s_16x224']} s | 0.8 s | "
        "1.2 s |",
        f"| CPU embed, C3D native 16x112x112x3 | | {k['embed_s_16x112']} s | | |",
        f"| training epoch, built-in corpus ({args.train_clips} clips) | {c['epoch_s_builtin']} s "
        "(cached "
        f"features) | {k['epoch_s_builtin_extrapolated']} s (extrapolated) | 2.7 h / 4 500 videos "
        "| 16 h / 4 500 videos |",
    ]
    print("\n" + "\n".join(rows) + "\n")
    print(
        "| other models | parameters | checkpoint | embed 16x224x224 | embed 16x112x112 "
        "|\n|---|---|---|---|---|"
    )
    for name in ("cnn_lstm_e2e", "r2plus1d", "x3d_xs"):
        m = out["models"][name]
        print(
            f"| {name} | {m['params_m']} M | {m['checkpoint_mb']} MB | {m['embed_s_16x224']} s | "
            f"{m.get('embed_s_16x112', '')}{' s' if 'embed_s_16x112' in m else ''} |"
        )


if __name__ == "__main__":
    main()
