"""Embedding media files one by one with a model: videos and images in one space.

Clips are made by :func:`media_retrieval.clips.load_clip` with the model's clip spec (the one
it was trained with), as index builds and queries make them: an image is a still clip, its
frame repeated ``frames`` times. ``frame_index`` embeds one sampled frame of a video as such a
still (how a frame grabbed from a clip queries the collection). ``mode="backbone"`` embeds with
the 2D backbone's pooled features alone (the paper's image-retrieval path); those live in the
backbone's space and are comparable with videos only for the no-recurrence model
(``model.temporal.cell=none``, whose video embedding is the mean frame feature).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from media_retrieval.data.clips import ClipSpec, load_clip
from media_retrieval.errors import ConfigError


@torch.inference_mode()
def embed_file(model, path: str | Path, frames: int | None = None, transform=None, mode: str = "clip",
               frame_index: int | None = None, spec: ClipSpec | None = None) -> torch.Tensor:
    """(D,) embedding of one video or image file (``spec``: default the model's own;
    ``frames``/``transform`` override its frame count and transform)."""
    if mode not in ("clip", "backbone"):
        raise ConfigError(f"mode={mode!r}; valid: clip, backbone")
    spec = spec or model.input_spec
    if frames:
        spec = replace(spec, frames=int(frames))
    clip = load_clip(path, spec, transform=transform)
    if frame_index is not None:
        clip = clip[frame_index:frame_index + 1].expand_as(clip)
    x = clip.unsqueeze(0).to(model.device)
    model.eval()
    if mode == "backbone":
        if not hasattr(model, "frame_features"):
            raise ConfigError(f"{type(model).__name__} has no 2D backbone: use mode=clip")
        return model.frame_features(x)[0].mean(0)
    return model.embed({"clip": x})[0]
