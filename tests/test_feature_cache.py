"""The on-disk frame-feature cache: keyed by every setting, reused, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from media_retrieval.data.clips import ClipSpec
from media_retrieval.data.corpus import encode_mp4
from media_retrieval.data.datasets import FolderDataModule
from media_retrieval.data.discovery import MediaItem
from media_retrieval.data.feature_cache import FrameFeatureCache


class CountingEncoder(nn.Module):
    """Mean colour per frame; counts the frames it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.frames_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.frames_seen += x.shape[0]
        return x.float().mean(dim=(2, 3))


@pytest.fixture
def clips(tmp_path):
    root = tmp_path / "clips"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(3):
            frames = [rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(8)]
            encode_mp4(frames, root / label / f"{label}{i}.mp4", fps=8)
    return root


def _dm(root, cache_dir, clip: dict | None = None, **kw):
    spec = ClipSpec(**{"frames": 4, "image_size": 32, "chunk_s": None, **(clip or {})})
    return FolderDataModule(
        root=str(root), cache_dir=str(cache_dir), clip=spec, num_workers=0, **kw
    )


@pytest.mark.parametrize(
    "change",
    [
        {"frames": 3},
        {"image_size": 24},
        {"resize": "stretch"},
        {"sampling": "time"},
        {"encoder": "other"},
    ],
)
def test_any_key_setting_recomputes_and_unchanged_reuses(clips, tmp_path, change):
    enc = CountingEncoder()
    dm = _dm(clips, tmp_path / "cache")
    dm.attach_frame_encoder(enc, {"name": "counting"})
    dm.prepare_data()
    first = enc.frames_seen
    assert first == 6 * 4
    again = _dm(clips, tmp_path / "cache")
    again.attach_frame_encoder(enc, {"name": "counting"})
    again.prepare_data()
    assert enc.frames_seen == first  # unchanged settings: nothing recomputed
    spec = {"name": "other"} if "encoder" in change else {"name": "counting"}
    changed = _dm(clips, tmp_path / "cache", {k: v for k, v in change.items() if k != "encoder"})
    changed.attach_frame_encoder(enc, spec)
    assert changed.cache.key != dm.cache.key
    changed.prepare_data()
    assert enc.frames_seen > first  # a changed setting never reuses stale features


def test_interrupted_build_resumes_without_redoing_shards(clips, tmp_path):
    items = [MediaItem(str(p), "d", p.parent.name, p.stem) for p in sorted(clips.rglob("*.mp4"))]
    enc = CountingEncoder()
    calls = {"n": 0}

    def load(item: MediaItem) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # Ctrl-C part-way through the build
        return torch.full((4, 3, 8, 8), float(len(item.path)))

    cache = FrameFeatureCache(tmp_path / "cache", {"k": 1}, shard_size=2)
    keys = [it.key for it in items]
    with pytest.raises(KeyboardInterrupt):
        cache.build(items, keys, load, enc)
    done = set(FrameFeatureCache(tmp_path / "cache", {"k": 1}).store.index())
    assert len(done) == 4  # two complete shards survived
    resumed = FrameFeatureCache(tmp_path / "cache", {"k": 1}, shard_size=2)
    calls["n"] = 100
    resumed.build(items, keys, lambda it: torch.full((4, 3, 8, 8), float(len(it.path))), enc)
    assert set(resumed.store.index()) == set(keys)
    full = FrameFeatureCache(tmp_path / "fresh", {"k": 1}, shard_size=2)
    full.build(
        items, keys, lambda it: torch.full((4, 3, 8, 8), float(len(it.path))), CountingEncoder()
    )
    for it in items:  # same result as an uninterrupted build
        np.testing.assert_array_equal(resumed.get(it.key), full.get(it.key))


def test_features_are_keyed_by_content_not_path(clips, tmp_path):
    """An edited file at the same path is never served its old features; its new content is
    computed once (and a copy of known content at a new path costs nothing)."""
    import os
    import shutil

    enc = CountingEncoder()
    dm = _dm(clips, tmp_path / "cache")
    dm.attach_frame_encoder(enc, {"name": "counting"})
    dm.prepare_data()
    dm.setup()
    a0 = next(it for it in dm.items() if it.path.endswith("a0.mp4"))
    b1 = next(it for it in dm.items() if it.path.endswith("b1.mp4"))
    before_a0, b1_feats = dm._load(a0)["features"], dm._load(b1)["features"]
    assert not torch.equal(before_a0, b1_feats)

    shutil.copy(b1.path, a0.path)  # same path, other content
    os.utime(a0.path, ns=(1, 1))
    shutil.copy(b1.path, clips / "b" / "b1_copy.mp4")  # known content, new path
    seen = enc.frames_seen
    edited = _dm(
        clips, tmp_path / "cache", dedupe=False
    )  # keep the copies (a corpus would drop them)
    edited.attach_frame_encoder(enc, {"name": "counting"})
    edited.prepare_data()
    edited.setup()
    assert enc.frames_seen == seen  # both files hold content already cached (b1's)
    assert torch.equal(edited._load(a0)["features"], b1_feats)
    copy = next(it for it in edited.items() if it.path.endswith("b1_copy.mp4"))
    assert torch.equal(edited._load(copy)["features"], b1_feats)


class ClipMeanEncoder(nn.Module):
    """A clip-level encoder (one row per clip): mean colour over the clip."""

    level = "clip"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W)
        return x.float().mean(dim=(1, 3, 4))


def test_frame_and_clip_encoders_share_one_decode(clips, tmp_path, monkeypatch):
    """Both caches filled from one decode per clip hold exactly what separate builds hold,
    each encoder reading its own normalisation (I3D's [-1, 1] beside ImageNet's); a file that
    cannot be decoded is recorded as skipped in both."""
    import media_retrieval.data.datamodule as datamodule

    (clips / "a" / "broken.mp4").write_bytes(b"not a video")
    decodes = {"n": 0}
    real_load = datamodule.load_clip

    def counting_load(*args, **kwargs):
        decodes["n"] += 1
        return real_load(*args, **kwargs)

    monkeypatch.setattr(datamodule, "load_clip", counting_load)

    def built(cache_dir, frame: bool, clip: bool):
        dm = _dm(clips, cache_dir)
        if frame:
            dm.attach_frame_encoder(CountingEncoder(), {"name": "counting"})
        if clip:
            dm.attach_clip_encoder(ClipMeanEncoder(), {"name": "clip-mean"})
        dm.prepare_data()
        return dm

    joint = built(tmp_path / "joint", True, True)
    assert decodes["n"] == 7  # six clips and the broken file, each decoded once for both
    frames_only = built(tmp_path / "separate", True, False)
    clips_only = built(tmp_path / "separate", False, True)
    assert decodes["n"] == 7 + 2 * 7
    items = [it for it in joint.items() if it.path.endswith("broken.mp4") is False]
    assert len(items) == 6
    for it in items:
        key = joint.content_key(it)
        np.testing.assert_array_equal(joint.cache.get(key), frames_only.cache.get(key))
        np.testing.assert_array_equal(joint.clip_cache.get(key), clips_only.clip_cache.get(key))
        # the two caches hold different scalings of the same pixels: ImageNet vs [-1, 1]
        assert not np.allclose(joint.cache.get(key).mean(0), joint.clip_cache.get(key))
    broken = joint.content_key(next(i for i in joint.items() if i.path.endswith("broken.mp4")))
    assert broken in joint.cache.skipped() and broken in joint.clip_cache.skipped()
