"""How a media file becomes model input: one :class:`ClipSpec`, one :func:`load_clip`.

Training, evaluation, the feature cache, indexing and search all make clips here, so a query
is embedded exactly as the model's training clips were. The spec travels with the model: it
is saved in every checkpoint (``checkpoint["media_retrieval"]["clip_spec"]``) and in every
index manifest, so a checkpoint alone is enough to index and search correctly.

An image is a still clip: its one frame repeated ``frames`` times (for ``frames: 1`` image
models, exactly the training input), so images and videos share one pipeline and one index.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from media_retrieval.errors import DataError
from media_retrieval.utils.limits import limits

#: normalisation name -> (mean, std) per RGB channel, applied to pixels scaled to [0, 1]
NORMALIZATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                  "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}  # [-1, 1]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSpec:
    """Everything between a file and the model's input (its :meth:`key` is part of the index
    fingerprint and the feature-cache key)."""

    frames: int = 16
    image_size: int = 224
    resize: str = "short_side_crop"
    in_chans: int = 3
    sampling: str = "index"
    chunk_s: float | None = 10.0
    decoder: str = "seek"  # not in the key: both decoders give the same pixels (tested)
    #: how pixels are scaled for the model: ``imagenet`` (mean/std of ImageNet, the 2D frame
    #: encoders) or ``inception`` ([-1, 1], I3D). The model decides it (``input_normalize``)
    normalize: str = "imagenet"

    def __post_init__(self) -> None:
        from media_retrieval.config.data import DECODERS, RESIZE_MODES, SAMPLINGS

        checks = [(isinstance(self.frames, int) and 1 <= self.frames <= 1024, "frames in 1..1024"),
                  (isinstance(self.image_size, int) and 8 <= self.image_size <= 4096, "image_size in 8..4096"),
                  (self.resize in RESIZE_MODES, f"resize in {RESIZE_MODES}"),
                  (self.in_chans in (1, 3), "in_chans 1 or 3"), (self.sampling in SAMPLINGS, f"sampling in {SAMPLINGS}"),
                  (self.chunk_s is None or (isinstance(self.chunk_s, (int, float)) and self.chunk_s > 0),
                   "chunk_s > 0 or null"), (self.decoder in DECODERS, f"decoder in {DECODERS}"),
                  (self.normalize in NORMALIZATIONS, f"normalize in {tuple(NORMALIZATIONS)}")]
        bad = [want for ok, want in checks if not ok]
        if bad:
            raise DataError(f"clip spec {self.key()} is invalid: needs {'; '.join(bad)}")
        cap = limits().max_clip_pixels  # in range field by field, yet 1024 frames x 4096 px is 17 G values
        if self.frames * self.image_size**2 > cap:
            raise DataError(f"clip spec {self.key()}: {self.frames} frames of {self.image_size} px are over the limit "
                            f"of {cap} pixels per clip (MEDIA_RETRIEVAL_MAX_CLIP_PIXELS raises it)")

    def key(self) -> dict:
        """The fields that decide the pixels (the decoder does not). ImageNet normalisation, the
        default, is left out, so a stored spec without ``normalize`` means ImageNet and every
        index and feature cache made before the field existed keeps its key."""
        d = asdict(self)
        d.pop("decoder")
        if d["normalize"] == "imagenet":
            d.pop("normalize")
        return d

    @classmethod
    def from_dict(cls, spec: object, **overrides) -> ClipSpec:
        """From a stored spec (a checkpoint or an index manifest): known keys of the right types
        only; anything else is refused with one line."""
        names = {f.name for f in fields(cls)}
        if not isinstance(spec, dict) or not set(spec) <= names or not {"frames", "image_size"} <= set(spec):
            raise DataError(f"the stored clip spec {str(spec)[:120]} is not one (keys {sorted(names)})")
        typed = {"frames": int, "image_size": int, "in_chans": int, "resize": str, "sampling": str, "decoder": str,
                 "normalize": str}
        for k, t in typed.items():
            if k in spec and (not isinstance(spec[k], t) or isinstance(spec[k], bool)):
                raise DataError(f"the stored clip spec has {k}={spec[k]!r}")
        return cls(**{**spec, **overrides})

    def with_overrides(self, warn: bool = True, **overrides) -> ClipSpec:
        """This spec with some fields replaced (None = keep). With ``warn``, a change to what
        decides the pixels is logged: the model was trained on other clips. ``chunk_s`` (how
        long a library's videos are cut) is never warned about."""
        new = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        changed = {k: (self.key().get(k), v) for k, v in new.key().items() if self.key().get(k) != v and k != "chunk_s"}
        if changed and warn:
            log.warning("clip spec overridden (the model was trained with other clips): %s",
                        ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        return new

    def with_preprocess(self, preprocess: Mapping[str, Any], warn: bool = True) -> ClipSpec:
        """This spec with a ``preprocess:`` block's values (``configs/index.yaml``; null = the
        model's own); ``chunk_s`` and ``decoder`` are a library's choices, not the model's."""
        given = {k: preprocess.get(k) for k in ("frames", "image_size", "resize", "in_chans", "sampling")}
        return self.with_overrides(warn=warn, **given, chunk_s=preprocess.get("chunk_s"),
                                   decoder=preprocess.get("decoder") or "seek")

    def transform(self):
        from media_retrieval.data.transforms import ClipTransform

        mean, std = NORMALIZATIONS[self.normalize]
        return ClipTransform(self.image_size, self.resize, mean=mean, std=std, in_chans=self.in_chans)


def load_clip(path: str | Path, spec: ClipSpec, start_s: float | None = None, end_s: float | None = None, *,
              transform=None, min_frames: int = 1, rng: np.random.Generator | None = None) -> torch.Tensor:
    """(T, C, H, W) model input for a video (or its span ``start_s``..``end_s``) or an image.

    ``transform``: the evaluation transform of ``spec`` unless given (training passes its
    augmenting one); ``min_frames``: videos with fewer decodable frames are refused;
    ``rng``: temporal jitter (training)."""
    from media_retrieval.data.video import load_frames, media_type

    frames = load_frames(path, spec.frames, min_frames=min_frames, sampling=spec.sampling, start_s=start_s,
                         end_s=end_s, decoder=spec.decoder, rng=rng)
    if media_type(path) == "image" or frames.shape[0] == 1:
        frames = frames.expand(spec.frames, *frames.shape[1:])
    elif frames.shape[0] < spec.frames:  # defensive: a sampler returning fewer frames repeats the last
        frames = torch.cat([frames, frames[-1:].expand(spec.frames - frames.shape[0], *frames.shape[1:])])
    return (transform or spec.transform())(frames)
