"""Embedding media files one by one with a trained model: videos and images in one space.

An image is a one-frame clip through the same model (``mode="clip"``), so images and videos
share one embedding space and one index. ``mode="backbone"`` embeds images with the 2D
backbone's pooled features alone (the paper's image-retrieval path); those live in the
backbone's space and are comparable with videos only for the no-recurrence model
(``model.temporal.cell=none``, whose video embedding is the mean frame feature).
"""

from __future__ import annotations

from pathlib import Path

import torch

from media_retrieval.data.transforms import ClipTransform
from media_retrieval.data.video import load_frames, media_type
from media_retrieval.errors import ConfigError


@torch.inference_mode()
def embed_file(model, path: str | Path, frames: int = 16, transform: ClipTransform | None = None,
               mode: str = "clip", frame_index: int | None = None) -> torch.Tensor:
    """(D,) embedding of one video or image file. ``frame_index``: embed only that sampled frame
    of a video, as a still (how a frame grabbed from a clip queries the collection)."""
    if mode not in ("clip", "backbone"):
        raise ConfigError(f"mode={mode!r}; valid: clip, backbone")
    transform = transform or ClipTransform(int(model.hparams.get("input_size", 224)))
    clip = load_frames(path, frames if media_type(path) == "video" else 1)
    if frame_index is not None:
        clip = clip[frame_index:frame_index + 1]
    x = transform(clip).unsqueeze(0).to(model.device)
    model.eval()
    if mode == "backbone":
        if not hasattr(model, "frame_features"):
            raise ConfigError(f"{type(model).__name__} has no 2D backbone: use mode=clip")
        return model.frame_features(x)[0].mean(0)
    return model.embed({"clip": x})[0]
