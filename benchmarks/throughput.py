"""Throughput: embedding, decoding and end-to-end indexing, this code beside a baseline commit.

Measures, on ``--device cpu|cuda``, in one invocation:

- **embed**: clips/s of each model's ``embed`` (cnn_lstm at 224, C3D at its native 112 and at
  224), batch 1 and 32, fp32 and bf16 autocast (and ``torch.compile`` with ``--compile``),
  beside the bare-timm Lite0 ceiling (channels_last, the same precision) in frames/s;
- **decode**: clips/s of the project's clip loader by DataLoader workers (0, 1, 2, ...);
- **index**: end-to-end ``src/index.py`` (the no-training model: ImageNet Lite0, mean of
  16 frames) on a generated library of ``--clips`` videos, 10-30 s, 320x240 and 640x480,
  H.264 MP4 and MPEG-4 AVI, for this tree and for ``--baseline-ref`` (checked out into a
  temporary worktree), each in a fresh process with its own defaults; the two indexes must
  hold the same embeddings (max |difference| reported; fp32 target 1e-4);
- **profile**: where the time of one clip goes (decode, transform, encode; write from the
  index build), measured one clip at a time.

One JSON line on stdout, and ``benchmarks/results/throughput-<device>.json`` (or ``--out``)
rewritten
after every phase and measurement, so a run cut short keeps what it measured. On CUDA the
GPU's utilisation is sampled (NVML) while each index builds. Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/throughput.py --device cpu --clips 200 \\
        --baseline-ref <commit>
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


# ---------------------------------------------------------------------------- the library
def generate_library(root: Path, clips: int, seed: int = 0) -> list[Path]:
    """``clips`` videos of 10-30 s at 10 fps: a moving, colour-shifting pattern (so decoding
    is real work), half 320x240 and half 640x480, every third one MPEG-4 in AVI. Encoded in
    one process per core (each video's parameters come from its own seed, so the library is
    the same whatever the core count): on a lent GPU machine the library is made there, and
    its minutes count against the lease."""
    from concurrent.futures import ProcessPoolExecutor

    paths = [
        root
        / f"{'avi' if i % 3 == 2 else 'mp4'}"
        / f"clip_{i:04d}.{'avi' if i % 3 == 2 else 'mp4'}"
        for i in range(clips)
    ]
    todo = [(i, p, seed) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        with ProcessPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
            list(pool.map(_encode_video, *zip(*todo, strict=True)))
    return paths


def _encode_video(i: int, path: Path, seed: int) -> None:
    import av

    rng = np.random.default_rng([seed, i])
    w, h = (320, 240) if i % 2 == 0 else (640, 480)
    avi = path.suffix == ".avi"
    path.parent.mkdir(parents=True, exist_ok=True)
    seconds, fps = int(rng.integers(10, 31)), 10
    yy, xx = np.mgrid[0:h, 0 : w + 8 * seconds * fps].astype(np.float32)
    base = (127 + 127 * np.sin(xx / (13 + i % 7) + np.cos(yy / 17)))[
        ..., None
    ]  # panned over: motion
    colour = rng.uniform(0, 255, 3)
    tmp = path.with_suffix(".part" + path.suffix)
    with av.open(str(tmp), mode="w", format="avi" if avi else "mp4") as container:
        stream = container.add_stream("mpeg4" if avi else "libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if not avi:
            stream.options = {"preset": "ultrafast", "crf": "28"}
        for t in range(seconds * fps):
            phase = t / fps
            view = base[:, 8 * t : 8 * t + w]
            img = np.clip(view * 0.6 + colour * (0.4 + 0.3 * np.sin(phase)), 0, 255).astype(
                np.uint8
            )
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)


# ---------------------------------------------------------------------------- embedding rates
def timed(fn, repeats: int, warmup: int = 2) -> float:
    """Seconds per call (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def embed_rates(
    device: str, precisions: list[str], rows: list[dict] | None = None, on_row=None
) -> list[dict]:
    """Rates of each model, size, precision and batch, appended to ``rows`` one by one
    (``on_row`` after each: a lease that ends mid-way keeps what was measured). The bare timm
    ceiling comes first: it is what the project's Lite0 path is judged against."""
    from media_retrieval.models import CNNLSTM
    from media_retrieval.models.c3d import C3DModule
    from media_retrieval.models.inference import fast_inference

    rows = [] if rows is None else rows
    on_row = on_row or (lambda: None)
    import timm

    net = (
        timm.create_model("efficientnet_lite0", num_classes=0)
        .eval()
        .to(device)
        .to(memory_format=torch.channels_last)
    )
    for precision in precisions:
        b = 64 if device == "cpu" else 512
        x = torch.rand(b, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
        m = torch.compile(net) if "compile" in precision else net
        dtype = torch.bfloat16 if "bf16" in precision else None

        def fwd(m=m, x=x, dtype=dtype):
            with (
                torch.inference_mode(),
                torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None),
            ):
                m(x)

        s = timed(fwd, 2 if device == "cpu" else 10, 1 if device == "cpu" else 3)
        rows.append(
            {
                "model": "bare_timm_lite0",
                "input": 224,
                "precision": precision,
                "batch": b,
                "frames_per_s": round(b / s, 1),
            }
        )
        on_row()
    models = {
        "cnn_lstm": (
            lambda: CNNLSTM(
                backbone={"name": "efficientnet_lite0", "weights": "none"},
                temporal={"cell": "lstm", "hidden": 256},
            ),
            (224,),
        ),
        "c3d": (lambda: C3DModule(input_size=112), (112, 224)),
    }
    # CPU: batch 8 already saturates 2 cores (and batch 32 of C3D at 224 takes minutes a call)
    batches = (1, 8) if device == "cpu" else (1, 32)
    cpu = device == "cpu"
    for name, (make, sizes) in models.items():
        for size in sizes:
            for precision in precisions:
                if cpu and name == "c3d" and size == 224 and precision != "fp32":
                    continue  # bf16 without CPU bf16 units: minutes, and no one runs it
                model = make().eval().to(device)
                run = fast_inference(
                    model,
                    precision="bf16" if "bf16" in precision else "fp32",
                    compile_model="compile" in precision,
                )
                for b in batches:
                    x = torch.rand(b, 16, 3, size, size, device=device)
                    s = timed(lambda m=run, x=x: m({"clip": x}), 2 if cpu else 10, 1 if cpu else 3)
                    rows.append(
                        {
                            "model": name,
                            "input": size,
                            "precision": precision,
                            "batch": b,
                            "clips_per_s": round(b / s, 2),
                        }
                    )
                    on_row()
    return rows


def decode_rates(files: list[Path], workers_list: list[int]) -> list[dict]:
    from torch.utils.data import DataLoader

    from media_retrieval.data.clips import ClipSpec
    from media_retrieval.data.library import SegmentDataset, skip_failed_collate

    spec = ClipSpec(frames=16, image_size=224)
    rows = []
    for w in workers_list:
        ds = SegmentDataset([(str(f), None, None) for f in files], spec)
        t = time.perf_counter()
        n = sum(
            len(b["clip"])
            for b in DataLoader(ds, batch_size=4, num_workers=w, collate_fn=skip_failed_collate)
            if b is not None
        )
        rows.append({"workers": w, "clips_per_s": round(n / (time.perf_counter() - t), 2)})
    return rows


def profile(files: list[Path], device: str) -> dict:
    """Seconds per clip of each stage, one clip at a time (decode and transform in this
    process, encode by the no-training model's ``embed`` on its fast path)."""
    from media_retrieval.data.clips import ClipSpec, clip_transform
    from media_retrieval.data.video import load_frames
    from media_retrieval.models.inference import fast_inference
    from media_retrieval.retrieval.media_index import default_model

    spec = ClipSpec(frames=16, image_size=224)
    transform = clip_transform(spec)
    model = fast_inference(default_model().to(device))
    dec, tr, enc = [], [], []
    for f in files:
        t = time.perf_counter()
        frames = load_frames(str(f), 16, start_s=0.0, end_s=10.0)
        dec.append(time.perf_counter() - t)
        t = time.perf_counter()
        clip = transform(frames)
        tr.append(time.perf_counter() - t)
        t = time.perf_counter()
        model({"clip": clip[None].to(device)})
        enc.append(time.perf_counter() - t)
    return {
        "decode_s": float(np.mean(dec)),
        "transform_s": float(np.mean(tr)),
        "encode_s": float(np.mean(enc)),
    }


# ---------------------------------------------------------------------------- end to end
def index_run(
    tree: Path, media: Path, index_dir: Path, device: str, precision: str | None = None
) -> dict:
    """``src/index.py`` of ``tree`` with its own defaults (``precision``: this tree's
    ``index.precision``, None for the tree's default), in a fresh process. On CUDA the GPU's
    utilisation is sampled every 0.2 s while it runs (NVML, where installed)."""
    shutil.rmtree(index_dir, ignore_errors=True)
    # the tree's sources first; keep the rest of the path (a GPU machine's carried wheels live
    # there)
    own = str(ROOT / "src")
    rest = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e and e != own]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree / "src"), *rest]),
        "PROJECT_ROOT": str(index_dir.parent / "root"),
        "WANDB_MODE": "disabled",
    }
    cmd = [
        sys.executable,
        str(tree / "src" / "index.py"),
        "model.temporal.cell=none",
        "model.temporal.stats=[]",
        f"media_dir={media}",
        f"index_dir={index_dir}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        "trainer.devices=1",
    ] + ([f"index.precision={precision}"] if precision else [])
    sampler = GpuSampler() if device == "cuda" else None
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        util = sampler.stop() if sampler else None
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    current = (index_dir / "CURRENT").read_text().strip()
    manifest = json.loads((index_dir / current / "manifest.json").read_text())
    vectors = np.load(index_dir / current / "embeddings.npy", mmap_mode="r")
    return {
        "seconds": manifest["stats"]["seconds"],
        "wall_s": round(wall, 1),
        "segments": manifest["stats"]["segments"],
        "vectors": np.asarray(vectors),
        "generation": index_dir / current,
        "gpu_util": util,
    }


class GpuSampler:
    """GPU utilisation (%) every ``period`` seconds on a thread, through NVML: the share of
    time a kernel ran, which is what "the GPU is busy while indexing" means."""

    def __init__(self, period: float = 0.2) -> None:
        import threading

        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        except Exception:  # noqa: BLE001 - NVML absent: no samples, said in the result
            self._read = None
        self._thread = threading.Thread(target=self._loop, args=(period,), daemon=True)
        self._thread.start()

    def _loop(self, period: float) -> None:
        while self._read and not self._stop.wait(period):
            self.samples.append(int(self._read()))

    def stop(self) -> dict | None:
        self._stop.set()
        self._thread.join()
        if not self.samples:
            return None
        a = np.asarray(self.samples)
        # the process's start (imports, model build) and the library scan are in the samples too
        busy = a[a > 0]
        return {
            "mean": round(float(a.mean()), 1),
            "p50": float(np.median(a)),
            "samples": len(a),
            "mean_while_nonzero": round(float(busy.mean()), 1) if len(busy) else 0.0,
            "share_nonzero": round(float((a > 0).mean()), 3),
        }


def segment_keys(generation: Path) -> list[str]:
    """Row keys of a generation, read through the project's own store (format-agnostic)."""
    from media_retrieval.retrieval.index_store import IndexStore

    gen = IndexStore(generation.parent).open(trusted=False)
    return [s.key for s in gen.segments]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--clips", type=int, default=200)
    p.add_argument(
        "--baseline-ref", default=None, help="git commit to compare end-to-end indexing with"
    )
    p.add_argument(
        "--baseline-tree",
        default=None,
        help="or: a folder holding that commit's files (git archive REF | tar -x -C DIR), "
        "where no .git is",
    )
    p.add_argument("--work", default=str(ROOT / ".cache" / "throughput"))
    p.add_argument(
        "--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)"
    )
    p.add_argument("--skip", nargs="*", default=[], choices=("embed", "decode", "index", "profile"))
    p.add_argument(
        "--precisions",
        nargs="*",
        default=None,
        help="embedding precisions to time (default: fp32 bf16, plus bf16+compile with --compile)",
    )
    p.add_argument(
        "--index-precisions",
        nargs="*",
        default=[None],
        help="index.precision values for this tree's index runs (default: its own default only); "
        "the first one is compared with the baseline",
    )
    p.add_argument(
        "--out",
        default=None,
        help="results file (default benchmarks/results/throughput-<device>.json); "
        "rewritten after every phase, so a run cut short keeps what it measured",
    )
    args = p.parse_args(argv)
    work = Path(args.work)
    t0 = time.time()
    path = (
        Path(args.out)
        if args.out
        else ROOT / "benchmarks" / "results" / f"throughput-{args.device}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    out: dict = {
        "device": args.device,
        "clips": args.clips,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "command": "benchmarks/throughput.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }

    def save(phase: str) -> None:
        out["seconds"] = round(time.time() - t0, 1)
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"[{out['seconds']} s] {phase} done", file=sys.stderr, flush=True)

    files = generate_library(work / f"library-{args.clips}", args.clips)
    out["library_s"] = round(time.time() - t0, 1)
    save("library")
    if "index" not in args.skip:
        media = work / f"library-{args.clips}"
        out["index"] = {}
        runs = {}
        for precision in args.index_precisions:
            name = "this" if precision is None else f"this_{precision}"
            runs[name] = this = index_run(
                ROOT, media, work / f"index-{name}", args.device, precision
            )
            out["index"][name] = {k: this[k] for k in ("seconds", "wall_s", "segments", "gpu_util")}
            out["index"][name]["clips_per_s"] = round(args.clips / this["seconds"], 2)
            save(f"index {name}")
        if args.baseline_ref or args.baseline_tree:
            if args.baseline_tree:
                base = index_run(
                    Path(args.baseline_tree).resolve(), media, work / "index-baseline", args.device
                )
            else:
                tree = Path(tempfile.mkdtemp(prefix="baseline-"))
                subprocess.run(
                    [
                        "git",
                        "-C",
                        str(ROOT),
                        "worktree",
                        "add",
                        "--detach",
                        str(tree),
                        args.baseline_ref,
                    ],
                    check=True,
                    capture_output=True,
                )
                try:
                    base = index_run(tree, media, work / "index-baseline", args.device)
                finally:
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                        capture_output=True,
                    )
            out["index"]["baseline"] = {
                k: base[k] for k in ("seconds", "wall_s", "segments", "gpu_util")
            }
            out["index"]["baseline"]["ref"] = args.baseline_ref or args.baseline_tree
            out["index"]["baseline"]["clips_per_s"] = round(args.clips / base["seconds"], 2)
            b = dict(zip(segment_keys(base["generation"]), base["vectors"], strict=True))
            for name, this in runs.items():
                a = dict(zip(segment_keys(this["generation"]), this["vectors"], strict=True))
                out["index"][name]["speedup_vs_baseline"] = round(
                    base["seconds"] / this["seconds"], 2
                )
                out["index"][name]["same_segments_vs_baseline"] = set(a) == set(b)
                out["index"][name]["max_abs_diff_vs_baseline"] = float(
                    max(np.abs(a[k] - b[k]).max() for k in a if k in b)
                )
            for key in ("speedup", "same_segments", "max_abs_diff"):
                out["index"][key] = out["index"][next(iter(runs))][f"{key}_vs_baseline"]
        save("index")
    if "embed" not in args.skip:
        precisions = args.precisions or (
            ["fp32", "bf16"] + (["bf16+compile"] if args.compile else [])
        )
        out["embed"] = []
        embed_rates(
            args.device, precisions, out["embed"], lambda: save(f"embed row {len(out['embed'])}")
        )
        save("embed")
    if "profile" not in args.skip:
        out["profile"] = profile(files[: min(8, len(files))], args.device)
        if "index" in out:
            pr = out["profile"]
            first = next(iter(runs.values()))
            clip_s = first["seconds"] / first["segments"]
            stage = pr["decode_s"] + pr["transform_s"] + pr["encode_s"]
            pr["index_s_per_segment"] = round(clip_s, 4)
            pr["line"] = (
                f"one clip at a time: decode {pr['decode_s']:.3f} s, transform "
                f"{pr['transform_s']:.3f} s, "
                f"encode {pr['encode_s']:.3f} s; the build spends {clip_s:.3f} s per segment "
                f"({'decode overlaps encode' if clip_s < stage else 'plus scan/hash/write'})"
            )
        save("profile")
    if "decode" not in args.skip:
        out["decode"] = decode_rates(
            files[: min(24, len(files))],
            [0, 1, 2] if args.device == "cpu" else [0, 4, max(1, (os.cpu_count() or 2) - 1)],
        )
        save("decode")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
