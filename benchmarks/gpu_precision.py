"""fp32 on a GPU against the CPU: how far apart the same clips' embeddings lie, with cuDNN's
TF32 convolutions (PyTorch's default) and with the project's fp32 (TF32 off), in a batch and
alone; and what TF32-off costs the frame encoder. Also the real path: an fp32 index of a
generated library built on the GPU against the same index built on the CPU.

One JSON line on stdout. Usage (a lent GPU machine; see gpu_throughput.sh for the wheels)::

    python3 benchmarks/gpu_precision.py --clips 12 --work /tmp/prec
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
DEV = os.environ.get("PRECISION_DEVICE", "cuda")  # cpu: a dry run of this script where no GPU is


def numerics(tf32: bool):
    """PyTorch's default on a GPU (cuDNN TF32 convolutions), or the project's fp32 context."""
    from media_retrieval.models.inference import autocast

    cudnn = torch.backends.cudnn
    return (
        cudnn.flags(
            enabled=True,
            benchmark=cudnn.benchmark,
            deterministic=cudnn.deterministic,
            allow_tf32=True,
        )
        if tf32
        else autocast(DEV, "fp32")
    )


def embeddings(work: Path, clips: int) -> dict:
    from throughput import generate_library

    from media_retrieval.data.clips import ClipSpec
    from media_retrieval.data.library import SegmentDataset
    from media_retrieval.retrieval.media_index import default_model

    files = generate_library(work / "library", clips)
    ds = SegmentDataset([(str(f), 0.0, 10.0) for f in files], ClipSpec(frames=16, image_size=224))
    x = torch.stack([ds[i]["clip"] for i in range(len(ds))])
    model = default_model().eval()
    with torch.inference_mode():
        cpu = model.embed({"clip": x}).float()
        gpu = model.to(DEV)

        def on_gpu(tf32: bool, alone: bool) -> torch.Tensor:
            batches = x.split(1) if alone else [x]
            with numerics(tf32):
                return torch.cat([gpu.embed({"clip": b.to(DEV)}).float().cpu() for b in batches])

        out = {}
        for tf32 in (True, False):
            batch, alone = on_gpu(tf32, False), on_gpu(tf32, True)
            name = "tf32" if tf32 else "fp32_ieee"
            out[name] = {
                "max_abs_vs_cpu_batch": float((batch - cpu).abs().max()),
                "max_abs_vs_cpu_alone": float((alone - cpu).abs().max()),
                "max_abs_batch_vs_alone": float((batch - alone).abs().max()),
            }
        out["embedding_norm_mean"] = float(cpu.norm(dim=1).mean())
    return out


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def encoder_rate() -> dict:
    import timm

    net = (
        timm.create_model("efficientnet_lite0", num_classes=0)
        .eval()
        .to(DEV)
        .to(memory_format=torch.channels_last)
    )
    x = torch.rand(512 if DEV == "cuda" else 16, 3, 224, 224, device=DEV).contiguous(
        memory_format=torch.channels_last
    )
    rates = {}
    for name in ("tf32", "fp32_ieee"):
        with numerics(name == "tf32"), torch.inference_mode():
            for _ in range(3):
                net(x)
            sync()
            t = time.perf_counter()
            for _ in range(10):
                net(x)
            sync()
        rates[name] = round(10 * len(x) / (time.perf_counter() - t), 1)
    return {"lite0_frames_per_s_batch512": rates}


def index_pair(work: Path) -> dict:
    """``src/index.py`` with index.precision=fp32 on the GPU and on the CPU, compared by key."""
    from media_retrieval.retrieval.index_store import IndexStore

    out, vecs = {}, {}
    for label, acc in (("gpu", "gpu" if DEV == "cuda" else "cpu"), ("cpu", "cpu")):
        ix = work / f"index-{label}"
        cmd = [
            sys.executable,
            str(ROOT / "src" / "index.py"),
            "model.temporal.cell=none",
            "model.temporal.stats=[]",
            f"media_dir={work / 'library'}",
            f"index_dir={ix}",
            f"trainer.accelerator={acc}",
            "trainer.devices=1",
            "index.precision=fp32",
        ]
        t = time.perf_counter()
        subprocess.run(
            cmd,
            check=True,
            capture_output=True,
            env={**os.environ, "PROJECT_ROOT": str(work / "root")},
        )
        gen = IndexStore(ix).open(trusted=False)
        vecs[label] = {s.key: np.asarray(gen.vectors[i]) for i, s in enumerate(gen.segments)}
        out[f"{label}_wall_s"] = round(time.perf_counter() - t, 1)
    keys = vecs["gpu"].keys() & vecs["cpu"].keys()
    out["segments"] = len(keys)
    out["max_abs_gpu_vs_cpu"] = float(
        max(np.abs(vecs["gpu"][k] - vecs["cpu"][k]).max() for k in keys)
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--work", default="/tmp/prec")
    args = p.parse_args()
    work = Path(args.work)
    out = {
        "gpu": torch.cuda.get_device_name() if DEV == "cuda" else None,
        "torch": torch.__version__,
        "clips": args.clips,
    }
    out["embed"] = embeddings(work, args.clips)
    out.update(encoder_rate())
    out["index"] = index_pair(work)
    out["command"] = "benchmarks/gpu_precision.py " + " ".join(sys.argv[1:])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
