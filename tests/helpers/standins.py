"""Tiny generated stand-ins for the datasets the experiment configs read, laid out where the
configs look (``paths.data_dir`` / ``paths.real_clips_dir``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from media_retrieval.data.corpus import encode_mp4


def _clip(path: Path, seed: int, frames: int = 8) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4((rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(frames)), path, 8)


def make_paper_datasets(data_dir: Path) -> Path:
    """UCF50 / UCF-101 / hmdb51 / kth look-alikes with class names from the UCF50 class map."""
    seed = 0
    for cls in ("Biking", "Diving", "PushUps"):
        for c in range(1, 5):
            seed += 1
            _clip(data_dir / "UCF50" / cls / f"v_{cls}_g01_c{c:02d}.mp4", seed)
    for ds, classes in (
        ("UCF-101", ("Biking", "Diving", "ApplyEyeMakeup")),
        ("hmdb51", ("ride_bike", "laugh")),
        ("kth", ("boxing", "walking")),
    ):
        for cls in classes:
            for c in range(1, 3):
                seed += 1
                name = (
                    f"v_{cls}_g08_c{c:02d}.mp4"
                    if ds == "UCF-101"
                    else f"person{c:02d}_{cls}_d1_uncomp.mp4"
                    if ds == "kth"
                    else f"{cls}_{c}.mp4"
                )
                _clip(data_dir / ds / cls / name, seed)
    return data_dir


def make_cifar_batches(root: Path, per_class: int = 3) -> Path:
    """A CIFAR10-format folder (``cifar-10-batches-py``) with ``per_class`` images per class in
    each of one training batch and the test batch."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    rng = np.random.default_rng(0)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, fh, protocol=2)
    for fname in ("data_batch_1", "test_batch"):
        labels = [c for c in range(10) for _ in range(per_class)]
        # each class a colour: retrievable by appearance
        base = np.array(
            [[(c * 25) % 255, (c * 70) % 255, (c * 140) % 255] for c in labels], dtype=np.float32
        )
        img = base[:, :, None, None] + rng.normal(0, 20, (len(labels), 3, 32, 32))
        data = np.clip(img, 0, 255).astype(np.uint8).reshape(len(labels), 3072)
        with open(d / fname, "wb") as fh:
            pickle.dump(
                {
                    b"batch_label": fname.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [f"{i}.png".encode() for i in range(len(labels))],
                },
                fh,
                protocol=2,
            )
    return root


def make_real_clips_standin(root: Path) -> Path:
    """gestures-mini (3 classes x 9) and ucf101-mini (3 x 5) look-alikes."""
    seed = 1000
    for cls in ("arms_sideways_overhead", "one_arm_raise", "arms_front_overhead"):
        for c in range(9):
            seed += 1
            _clip(root / "gestures-mini" / cls / f"{cls}_{c}.mp4", seed)
    for cls in ("ApplyEyeMakeup", "BenchPress", "Diving"):
        for c in range(1, 6):
            seed += 1
            _clip(root / "ucf101-mini" / cls / f"v_{cls}_g01_c{c:02d}.mp4", seed)
    return root
