"""How a media file becomes model input: one :class:`ClipSpec` (defined with the config
schemas, :mod:`media_retrieval.config.clip`, since it is also the ``clip`` node's schema), one
:func:`load_clip`.

Training, evaluation, the feature cache, indexing and search all make clips here, so a query
is embedded exactly as the model's training clips were. The spec travels with the model: it
is saved in every checkpoint (``checkpoint["media_retrieval"]["clip_spec"]``) and in every
index manifest, so a checkpoint alone is enough to index and search correctly.

An image is a still clip: its one frame repeated ``frames`` times (for ``frames: 1`` image
models, exactly the training input), so images and videos share one pipeline and one index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from media_retrieval.config.clip import NORMALIZATIONS, ClipSpec
from media_retrieval.data.transforms import ClipTransform
from media_retrieval.data.video import load_frames, media_type

__all__ = ["NORMALIZATIONS", "ClipSpec", "clip_transform", "load_clip"]


def clip_transform(spec: ClipSpec):
    """The evaluation transform of ``spec``: resize/crop, channels, the model's normalisation."""
    mean, std = NORMALIZATIONS[spec.normalize]
    return ClipTransform(spec.image_size, spec.resize, mean=mean, std=std, in_chans=spec.in_chans)


def load_clip(
    path: str | Path,
    spec: ClipSpec,
    start_s: float | None = None,
    end_s: float | None = None,
    *,
    transform=None,
    min_frames: int = 1,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """(T, C, H, W) model input for a video (or its span ``start_s``..``end_s``) or an image.

    ``transform``: the evaluation transform of ``spec`` unless given (training passes its
    augmenting one); ``min_frames``: videos with fewer decodable frames are refused;
    ``rng``: temporal jitter (training)."""

    frames = load_frames(
        path,
        spec.frames,
        min_frames=min_frames,
        sampling=spec.sampling,
        start_s=start_s,
        end_s=end_s,
        decoder=spec.decoder,
        rng=rng,
    )
    if media_type(path) == "image" or frames.shape[0] == 1:
        frames = frames.expand(spec.frames, *frames.shape[1:])
    elif (
        frames.shape[0] < spec.frames
    ):  # defensive: a sampler returning fewer frames repeats the last
        frames = torch.cat(
            [frames, frames[-1:].expand(spec.frames - frames.shape[0], *frames.shape[1:])]
        )
    return (transform or clip_transform(spec))(frames)
