"""The built-in corpus: real H.264 files, the planned sizes, appearance independent of class."""

from __future__ import annotations

import json
import os

import av
import numpy as np

from media_retrieval.data.corpus import LIMIT_CLASSES, MOTION_CLASSES, CorpusSpec, ensure_corpus


def test_generated_mp4_decode_with_pyav(tmp_path):
    spec = CorpusSpec(
        clips_per_class=1,
        images_per_class=1,
        min_duration_s=2,
        max_duration_s=4,
        classes=("zoom_in", "blink"),
    )
    root = ensure_corpus(tmp_path / "c", spec, workers=1)
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["clips"]) == 4
    for clip in manifest["clips"]:
        with av.open(str(root / clip["path"])) as c:
            stream = c.streams.video[0]
            assert stream.codec_context.name == "h264"
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == clip["n_frames"]
        assert frames[0].shape == (
            clip["height"] - clip["height"] % 2,
            clip["width"] - clip["width"] % 2,
            3,
        )
        assert 2 <= clip["n_frames"] / clip["fps"] <= 4.1
    images = sorted((root / "images").rglob("*.png"))
    assert len(images) == 4  # 4 appearance classes x 1


def test_corpus_reused_then_regenerated_on_new_settings(tmp_path):
    spec = CorpusSpec(
        clips_per_class=1, images_per_class=1, max_duration_s=2.5, classes=("static",)
    )
    root = ensure_corpus(tmp_path / "c", spec, workers=1)
    clip = next((root / "style_a").rglob("*.mp4"))
    mtime = os.stat(clip).st_mtime_ns
    ensure_corpus(root, spec, workers=1, verify=True)
    assert os.stat(clip).st_mtime_ns == mtime  # reused, not rewritten
    ensure_corpus(
        root,
        CorpusSpec(clips_per_class=2, images_per_class=1, max_duration_s=2.5, classes=("static",)),
        workers=1,
    )
    assert len(list((root / "style_a" / "static").glob("*.mp4"))) == 2


def _loo_1nn_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((y[d.argmin(1)] == y).mean())


def test_appearance_independent_of_class_but_motion_is_not(tmp_path):
    """Within a style, appearance (colour statistics of a frame) must not predict the class,
    while a motion statistic (how much pixels change over time) must."""
    spec = CorpusSpec(
        clips_per_class=6,
        images_per_class=1,
        min_duration_s=2,
        max_duration_s=2.5,
        styles=("style_a",),
        classes=MOTION_CLASSES,
    )
    root = ensure_corpus(tmp_path / "c", spec)
    manifest = json.loads((root / "manifest.json").read_text())
    appearance, motion, labels = [], [], []
    for clip in manifest["clips"]:
        with av.open(str(root / clip["path"])) as c:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(
                float
            )
        idx = np.linspace(0, len(frames) - 1, 8).round().astype(int)
        f = frames[idx]
        appearance.append(np.concatenate([f[0].mean((0, 1)), f[0].std((0, 1))]) / 255)
        diff = np.abs(np.diff(f, axis=0)).mean((1, 2, 3))  # change between sampled frames
        motion.append(np.concatenate([diff / (diff.mean() + 1e-6), [diff.mean() / 10]]))
        labels.append(MOTION_CLASSES.index(clip["label"]))
    y = np.array(labels)
    chance = 1 / len(MOTION_CLASSES)
    assert _loo_1nn_accuracy(np.array(appearance), y) < chance + 0.15
    assert _loo_1nn_accuracy(np.array(motion), y) > chance + 0.15
    assert set(LIMIT_CLASSES) <= set(MOTION_CLASSES)


def test_corpus_bytes_do_not_depend_on_location(tmp_path):
    spec = CorpusSpec(clips_per_class=1, images_per_class=1, max_duration_s=2.5, classes=("pulse",))
    a = json.loads((ensure_corpus(tmp_path / "a", spec, workers=1) / "manifest.json").read_text())[
        "files"
    ]
    b = json.loads(
        (ensure_corpus(tmp_path / "elsewhere" / "b", spec, workers=1) / "manifest.json").read_text()
    )["files"]
    assert a == b
