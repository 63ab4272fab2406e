"""Folder datasets: bad files are skipped and listed, chunks, splits, the real-clips reference."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, require_real_clips

from media_retrieval.cli.eval import evaluate
from media_retrieval.cli.train import train
from media_retrieval.data.clips import ClipSpec
from media_retrieval.data.corpus import encode_mp4
from media_retrieval.data.discovery import MediaItem, chunk_items
from media_retrieval.data.splits import one_dataset_split
from media_retrieval.data.video import decode_all_frames


def _clip(path: Path, n: int, seed: int, fps: int = 10, size=(48, 64)) -> None:
    """A clip whose frame i has brightness proportional to i (so sampling is checkable)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 60, size=(*size, 3), dtype=np.uint8)
    frames = (
        np.clip(base.astype(int) + int(190 * i / max(n - 1, 1)), 0, 255).astype(np.uint8)
        for i in range(n)
    )
    encode_mp4(frames, path, fps)


@pytest.fixture
def messy_folder(tmp_path) -> tuple[Path, dict[str, str]]:
    """3 classes x 4 good clips plus one of every kind of bad input; returns expected reasons."""
    root = tmp_path / "clips"
    for c, label in enumerate(("alpha", "beta", "gamma")):
        for i in range(4):
            _clip(root / label / f"{label}_{i}.mp4", 10 + i, seed=10 * c + i)
    good = root / "alpha" / "alpha_0.mp4"
    (root / "alpha" / "corrupt.mp4").write_bytes(os.urandom(4000))
    data = good.read_bytes()
    (root / "beta" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "beta" / "empty.mp4").write_bytes(b"")
    _clip(root / "gamma" / "short.mp4", 2, seed=99)
    (root / "gamma" / "notes.txt").write_text("not a video")
    os.symlink(root / "missing.mp4", root / "gamma" / "dangling.mp4")
    os.symlink(root / "alpha", root / "alpha" / "loop")  # symlink loop
    shutil.copy(good, root / "beta" / "copy_of_alpha_0.mp4")
    (root / "delta").mkdir()  # empty class folder
    expected = {
        "alpha/corrupt.mp4": "cannot",
        "beta/truncated.mp4": "cannot",
        "beta/empty.mp4": "cannot",
        "gamma/short.mp4": "fewer than",
        "gamma/notes.txt": "not a video",
        "gamma/dangling.mp4": "unreadable",
        "beta/copy_of_alpha_0.mp4": "duplicate of",
        "delta": "empty class folder",
    }
    return root, expected


def test_bad_files_are_skipped_and_listed(messy_folder, tmp_path):
    root, expected = messy_folder
    cfg = compose_cfg(
        "train.yaml",
        [
            "data=folder",
            f"data.root={root}",
            "data.unseen_classes=[gamma]",
            "data.clip.frames=4",
            "data.clip.image_size=64",
            "data.batch_size=4",
            "data.num_workers=0",
            f"paths.cache_dir={tmp_path}/cache",
            "trainer.max_epochs=2",
            "trainer.accelerator=cpu",
            "data.test_fraction=0.25",
        ],
        tmp_path / "run",
    )
    train(cfg)
    run = tmp_path / "run"
    assert (run / "retrieval" / "results.json").is_file()
    with open(run / "skipped.csv") as fh:
        rows = {os.path.relpath(r["path"], root): r["reason"] for r in csv.DictReader(fh)}
    for rel, reason in expected.items():
        assert rel in rows, f"{rel} missing from skipped.csv: {rows}"
        assert reason in rows[rel], (rel, rows[rel])
    with open(run / "split.csv") as fh:
        used = {os.path.relpath(r["path"], root) for r in csv.DictReader(fh)}
    assert used.isdisjoint(expected) and len(used) == 12


def test_missing_root_is_one_clear_error(tmp_path):
    from media_retrieval.errors import DataError

    cfg = compose_cfg("train.yaml", ["data=folder", f"data.root={tmp_path}/nope"], tmp_path)
    with pytest.raises(DataError, match="nope does not exist"):
        train(cfg)


def test_long_videos_become_chunks_sampled_within_their_span(tmp_path):
    path = tmp_path / "c" / "long.mp4"
    _clip(path, 120, seed=0, fps=10)  # 12 s
    item = MediaItem(str(path), "d", "c", "d/long")
    chunks, skipped = chunk_items([item], chunk_s=4)
    assert not skipped and [(c.chunk, c.start_s, c.end_s) for c in chunks] == [
        (0, 0.0, 4.0),
        (1, 4.0, 8.0),
        (2, 8.0, 12.0),
    ]
    means = [
        decode_all_frames(path, num=4, start_s=c.start_s, end_s=c.end_s).float().mean().item()
        for c in chunks
    ]
    assert means[0] < means[1] < means[2]  # later chunks = brighter frames
    whole = decode_all_frames(path, num=5, sampling="time")
    assert whole.shape[0] == 5
    assert chunk_items([item], chunk_s=None)[0] == [item]


def test_one_dataset_split_is_deterministic_and_leak_free():
    items = [
        MediaItem(f"/x/{c}/{v}_{k}.mp4", "d", c, f"d/{c}{v}", chunk=k)
        for c in "abcdef"
        for v in range(6)
        for k in range(2)
    ]
    s1 = one_dataset_split(items, unseen_classes=0.5, seed=3)
    s2 = one_dataset_split(items, unseen_classes=0.5, seed=3)
    assert [(i.path, i.chunk, i.role) for i in s1.items] == [
        (i.path, i.chunk, i.role) for i in s2.items
    ]
    unseen = {i.label for i in s1.items if not i.seen}
    assert len(unseen) == 3 and unseen.isdisjoint(s1.train_classes)
    roles_by_video: dict[str, set[str]] = {}
    for it in s1.items:
        roles_by_video.setdefault(it.video_id, set()).add(it.role)
    assert all(len(r) == 1 for r in roles_by_video.values())  # chunks never straddle roles
    assert {i.role for i in s1.items if i.label in unseen} <= {"query", "gallery"}
    pool_videos: dict[str, set[str]] = {}
    for it in s1.items:
        if it.role in ("query", "gallery"):
            pool_videos.setdefault(it.label, set()).add(it.video_id)
    for c, videos in pool_videos.items():  # every class with 2+ pool videos has a query
        assert len(videos) < 2 or any(i.role == "query" and i.label == c for i in s1.items)
    assert sum(len(v) >= 2 for v in pool_videos.values()) >= 3


@pytest.mark.slow
@pytest.mark.real_clips
def test_real_clips_reference_reproduced(tmp_path):
    """No training, leave-one-out over all 42 real clips: P@5 0.54 and mAP 0.70 (±0.02)."""
    real = require_real_clips()
    cfg = compose_cfg(
        "eval.yaml",
        [
            "data=folder",
            f"+data.roots={{ucf101-mini: {real / 'ucf101-mini'}, gestures-mini: "
            f"{real / 'gestures-mini'}}}",
            "model.temporal.cell=none",
            "model.temporal.stats=[]",
            "data.clip.sampling=index",
            "data.clip.chunk_s=null",
            "data.clip.resize=stretch",
            "trainer.accelerator=cpu",
            f"paths.cache_dir={tmp_path}/cache",
            "data.num_workers=1",
        ],
        tmp_path,
    )
    metrics = evaluate(cfg)
    assert metrics["retrieval/euclidean/all/accuracy@5"] == pytest.approx(0.54, abs=0.02)
    assert metrics["retrieval/euclidean/all/map"] == pytest.approx(0.70, abs=0.02)


@pytest.mark.parametrize("gop", [5, 40])
def test_seek_sampler_gives_decode_all_pixels(tmp_path, gop):
    from media_retrieval.data.video import seek_sample_frames

    path = tmp_path / "g.mp4"
    rng = np.random.default_rng(gop)
    encode_mp4(
        (rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(90)), path, 15, gop=gop
    )
    for kw in (
        {"num": 16},
        {"num": 7, "sampling": "time"},
        {"num": 5, "start_s": 2.0, "end_s": 4.5},
        {"num": 120},
    ):
        assert torch.equal(seek_sample_frames(path, **kw), decode_all_frames(path, **kw)), kw


def test_training_augmentation_varies_clips_and_evaluation_does_not(tmp_path):
    from media_retrieval.data.datasets import FolderDataModule
    from media_retrieval.data.video import jitter_indices

    _clip(tmp_path / "c" / "a" / "x.mp4", 60, seed=1)
    dm = FolderDataModule(
        root=str(tmp_path / "c"),
        clip=ClipSpec(frames=6, image_size=32, chunk_s=None),
        augment={"enabled": True, "temporal_jitter": True, "scale": [0.3, 1.0], "hflip": 0.5},
    )
    item = MediaItem(str(tmp_path / "c" / "a" / "x.mp4"), "c", "a", "c/x")
    torch.manual_seed(0)
    evals = [dm.load_pixels(item) for _ in range(3)]
    trains = [dm.load_pixels(item, train=True) for _ in range(3)]
    assert all(torch.equal(evals[0], e) for e in evals) and evals[0].shape == (6, 3, 32, 32)
    assert not torch.equal(trains[0], trains[1]) and trains[0].shape == (6, 3, 32, 32)
    rng = np.random.default_rng(0)
    for _ in range(20):
        j = jitter_indices(np.linspace(0, 59, 6).round().astype(int), 60, rng)
        assert (np.diff(j) >= 0).all() and j.min() >= 0 and j.max() <= 59
    from media_retrieval.data.video import seek_sample_frames

    a = seek_sample_frames(item.path, num=6, rng=np.random.default_rng(3))
    b = decode_all_frames(item.path, num=6, rng=np.random.default_rng(3))
    assert torch.equal(a, b)  # both samplers jitter identically


def test_pixel_mode_skips_bad_files_and_a_file_deleted_mid_run(
    messy_folder, tmp_path, monkeypatch, caplog
):
    """Pixel mode (C3D) probes containers instead of decoding everything up front; a clip that
    disappears after the split was made is skipped by the DataLoader and the run completes."""
    from media_retrieval.data.datasets import FolderDataModule

    root, expected = messy_folder
    victim = root / "beta" / "beta_3.mp4"
    real_setup = FolderDataModule.setup

    def setup_then_delete(self, stage=None):
        real_setup(self, stage)
        if victim.exists():
            victim.unlink()  # deleted between listing and reading

    monkeypatch.setattr(FolderDataModule, "setup", setup_then_delete)
    cfg = compose_cfg(
        "train.yaml",
        [
            "data=folder",
            f"data.root={root}",
            "data.unseen_classes=[gamma]",
            "data.clip.frames=4",
            "data.clip.image_size=32",
            "data.batch_size=4",
            "data.num_workers=0",
            "model=c3d",
            "model.width=0.125",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "data.test_fraction=0.25",
        ],
        tmp_path / "run",
    )
    train(cfg)
    assert (tmp_path / "run" / "retrieval" / "results.json").is_file()
    skipped = (tmp_path / "run" / "skipped.csv").read_text()
    for rel in ("corrupt.mp4", "truncated.mp4", "empty.mp4", "short.mp4", "notes.txt"):
        assert rel in skipped, rel
    assert any(
        "beta_3.mp4" in r.getMessage() and "in this batch" in r.getMessage() for r in caplog.records
    )


def test_horizontal_flips_keep_direction_classes_right(tmp_path):
    """A flipped move_left clip is a move_right clip: its target swaps; a class without a
    mirrored twin is never flipped; flips of other classes keep their label."""
    import numpy as np
    import torch

    from media_retrieval.data.corpus import encode_mp4
    from media_retrieval.data.datasets import FolderDataModule

    rng = np.random.default_rng(0)
    for label in ("move_left", "move_right", "pass_through", "static"):
        for i in range(4):
            encode_mp4(
                [rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(4)],
                tmp_path / "clips" / label / f"{label}{i}.mp4",
                fps=4,
            )
    augment = {
        "enabled": True,
        "temporal_jitter": False,
        "scale": [1.0, 1.0],
        "hflip": 1.0,
        "flip_pairs": [["move_left", "move_right"]],
        "no_flip": ["pass_through"],
    }
    dm = FolderDataModule(
        root=str(tmp_path / "clips"),
        unseen_classes=0.0,
        test_fraction=0.25,
        clip=ClipSpec(frames=4, image_size=32, chunk_s=None),
        num_workers=0,
        augment=augment,
        val_fraction=0.0,
    )
    dm.setup()
    train = dm.train_dataloader().dataset
    seen = {}
    for i in range(len(train)):
        item = dm.split.items[train.ids[i]]
        out = train[i]
        seen[item.label] = dm.split.train_classes[int(out["target"])]
    assert seen["move_left"] == "move_right" and seen["move_right"] == "move_left"
    assert seen["static"] == "static" and seen["pass_through"] == "pass_through"
    item = next(dm.split.items[i] for i in train.ids if dm.split.items[i].label == "pass_through")
    assert not dm._flip(item, train=True) and not dm._flip(item, train=False)
    flipped = dm.load_pixels(item, train=True, flip=True)
    torch.testing.assert_close(flipped, dm.load_pixels(item, train=True, flip=False).flip(-1))
