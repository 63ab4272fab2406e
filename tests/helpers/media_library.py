"""A small mixed media library for index/search tests: three classes told apart by what they
show (a red disc, blue stripes, a green checkerboard), as videos of several lengths and as
images, plus files an indexer must skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from media_retrieval.data.corpus import encode_mp4

CLASSES = ("red_disc", "blue_stripes", "green_checker")


def frame(label: str, t: float, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.full((size, size, 3), 235, np.float32) + rng.normal(0, 6, (size, size, 3))
    if label == "red_disc":
        cx, cy = size / 2 + size / 5 * np.sin(t), size / 2 + size / 6 * np.cos(t)
        m = (xx - cx) ** 2 + (yy - cy) ** 2 < (size / 4) ** 2
        img[m] = (220, 30, 30)
    elif label == "blue_stripes":
        m = ((xx + 12 * t) // 8) % 2 == 0
        img[m] = (30, 40, 210)
    else:
        m = (((xx + 6 * t) // 12) + (yy // 12)) % 2 == 0
        img[m] = (30, 170, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_video(path: Path, label: str, seconds: float, seed: int, fps: int = 8) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4((frame(label, i / fps, rng) for i in range(max(1, int(seconds * fps)))), path, fps)
    return path


def write_image(path: Path, label: str, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame(label, seed * 0.7, np.random.default_rng(seed))).save(path)
    return path


def make_library(root: Path, long_s: float = 7.0) -> dict[str, list[Path]]:
    """Per class: clips of 1, 2 and ``long_s`` seconds (the long one is chunked) in nested
    folders, and two images; plus a truncated video, an empty image and a text file."""
    made: dict[str, list[Path]] = {c: [] for c in CLASSES}
    for ci, c in enumerate(CLASSES):
        for j, secs in enumerate((1.0, 2.0, long_s)):
            made[c].append(
                write_video(root / c / "clips" / f"{c}_{j}.mp4", c, secs, seed=100 * ci + j)
            )
        for j in range(2):
            made[c].append(
                write_image(
                    root / c / f"{c}_photo{j}.{'png' if j else 'jpg'}", c, seed=100 * ci + 50 + j
                )
            )
    good = (root / CLASSES[0] / "clips" / f"{CLASSES[0]}_1.mp4").read_bytes()
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "broken" / "empty.jpg").write_bytes(b"")
    (root / "broken" / "notes.txt").write_text("not media")
    return made
