"""Frame sampling speed: keyframe-aware seeking vs decoding every frame, plus DataLoader
throughput and cached-feature vs on-the-fly epochs.

    python benchmarks/decode.py [--repeats 5] [--epoch]

Prints one JSON object. Clips: 320x240 H.264 at 25 fps, 10 s and 60 s, keyframe every 2 s or
every 10 s, generated into a temp folder. Every sampled frame of the seek sampler is asserted
pixel-identical to decode-all's at the same indices. Targets (issue 3): 60 s clip with a
keyframe every 2 s >= 3x faster; keyframe every 10 s never slower.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from media_retrieval.data.corpus import encode_mp4
from media_retrieval.data.video import decode_all_frames, seek_sample_frames


def make_clip(path: Path, seconds: int, gop_s: int, fps: int = 25) -> Path:
    yy, xx = np.mgrid[0:240, 0:320]
    frames = (
        np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1).astype(np.uint8)
        for i in range(seconds * fps)
    )
    encode_mp4(frames, path, fps, gop=gop_s * fps)
    return path


def clips_per_s(fn, path: Path, repeats: int) -> float:
    """1 / median seconds per clip (the median resists the noise of a shared 2-core machine)."""
    fn(path, num=16)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(path, num=16)
        times.append(time.perf_counter() - t0)
    return 1.0 / float(np.median(times))


class _Clips(Dataset):
    def __init__(self, path: Path, n: int) -> None:
        self.path, self.n = path, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return seek_sample_frames(self.path, num=16)


def loader_clips_per_s(path: Path, workers: int, n: int = 24) -> float:
    loader = DataLoader(_Clips(path, n), batch_size=4, num_workers=workers)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return n / (time.perf_counter() - t0)


def epoch_times() -> dict:
    """One training epoch of cnn_lstm on the built-in corpus: from the feature cache vs
    decoding + running Lite0 on the fly (what the cache saves every epoch)."""
    from hydra import compose, initialize_config_dir

    from media_retrieval.config.store import register

    register()
    from hydra.utils import instantiate

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(version_base="1.3", config_dir=str(root / "configs")):
        cfg = compose(
            "train.yaml", overrides=[f"paths.root_dir={root}", "paths.output_dir=/tmp/bench_epoch"]
        )
    dm = instantiate(cfg.data)
    model = instantiate(cfg.model)
    dm.attach_frame_encoder(model.backbone, model.encoder_spec())
    dm.prepare_data()
    dm.setup("fit")
    model.set_classes(dm.split.train_classes)
    opt = model.configure_optimizers()

    def run(loader, pixels: bool) -> float:
        t0 = time.perf_counter()
        for batch in loader:
            if pixels:
                with torch.no_grad():
                    batch["features"] = model.frame_features(
                        batch.pop("clip").contiguous(memory_format=torch.channels_last)
                        if batch["clip"].dim() == 4
                        else batch.pop("clip")
                    )
            loss, _ = model._classify(batch, model.embed(batch))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    cached = run(dm.train_dataloader(), pixels=False)
    dm.cache = None  # serve pixels: decode + CNN every epoch
    n = len(dm.split.ids("train"))
    on_the_fly = run(
        DataLoader(dm.train_dataloader().dataset, batch_size=8, num_workers=1), pixels=True
    )
    return {
        "train_clips": n,
        "epoch_seconds_cached_features": round(cached, 3),
        "epoch_seconds_features_on_the_fly": round(on_the_fly, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--epoch", action="store_true", help="also time cached vs on-the-fly epochs (~1 min)"
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = {
        "benchmark": "decode",
        "frames_sampled": 16,
        "resolution": "320x240",
        "fps": 25,
        "clips": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for seconds, gop_s in ((10, 2), (10, 10), (60, 2), (60, 10)):
            path = make_clip(Path(tmp) / f"c{seconds}_{gop_s}.mp4", seconds, gop_s)
            for kw in (
                {"num": 16},
                {"num": 16, "sampling": "time"},
                {"num": 8, "start_s": 3.0, "end_s": 7.0},
            ):
                assert torch.equal(decode_all_frames(path, **kw), seek_sample_frames(path, **kw)), (
                    path,
                    kw,
                )
            all_ = clips_per_s(decode_all_frames, path, args.repeats)
            seek = clips_per_s(seek_sample_frames, path, args.repeats)
            out["clips"].append(
                {
                    "seconds": seconds,
                    "keyframe_every_s": gop_s,
                    "decode_all_clips_per_s": round(all_, 2),
                    "seek_clips_per_s": round(seek, 2),
                    "speedup": round(seek / all_, 2),
                    "pixel_identical": True,
                }
            )
        ten = Path(tmp) / "c10_2.mp4"
        out["dataloader_clips_per_s"] = {
            str(w): round(loader_clips_per_s(ten, w), 2) for w in (0, 1, 2)
        }
    if args.epoch:
        out["epoch"] = epoch_times()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
