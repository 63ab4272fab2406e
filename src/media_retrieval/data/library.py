"""A user's media library as model input: files (or time spans of videos) -> preprocessed clips.

Index builds and queries go through :func:`load_clip` with the same :class:`Preprocess`, so a
query is embedded exactly as the indexed media were. An image becomes a still clip of
``frames`` identical frames: every item in a batch has the same shape, and a model sees a
still the way it sees a video without motion.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import Dataset

from media_retrieval.data.transforms import ClipTransform
from media_retrieval.data.video import load_frames, media_type
from media_retrieval.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocess:
    """Everything between a file and the model's input; part of the index fingerprint."""

    frames: int = 16
    image_size: int = 224
    resize: str = "short_side_crop"
    in_chans: int = 3
    sampling: str = "index"
    chunk_s: float | None = 10.0
    decoder: str = "seek"  # not in the fingerprint: both decoders give the same pixels (tested)

    @classmethod
    def from_spec(cls, spec: object, decoder: str = "seek") -> Preprocess:
        """From a stored spec (an index manifest): known keys of the right types only."""
        types = {"frames": int, "image_size": int, "resize": str, "in_chans": int, "sampling": str,
                 "chunk_s": (int, float, type(None))}
        if not isinstance(spec, dict) or set(spec) != set(types):
            raise DataError(f"the stored preprocessing {str(spec)[:120]} does not have the keys {sorted(types)}")
        for k, t in types.items():
            if not isinstance(spec[k], t) or isinstance(spec[k], bool):
                raise DataError(f"the stored preprocessing has {k}={spec[k]!r}")
        if not (1 <= spec["frames"] <= 1024 and 8 <= spec["image_size"] <= 4096 and spec["in_chans"] in (1, 3)):
            raise DataError(f"the stored preprocessing is out of range: {spec}")
        return cls(**spec, decoder=decoder)

    def spec(self) -> dict:
        d = asdict(self)
        d.pop("decoder")
        return d

    def transform(self) -> ClipTransform:
        return ClipTransform(self.image_size, self.resize, in_chans=self.in_chans)


def load_clip(path: str, pre: Preprocess, start_s: float | None = None, end_s: float | None = None,
              transform: ClipTransform | None = None) -> torch.Tensor:
    """(T, C, H, W) model input for a video (or its span) or an image (repeated T times)."""
    frames = load_frames(path, pre.frames, min_frames=1, sampling=pre.sampling, start_s=start_s, end_s=end_s,
                         decoder=pre.decoder)
    if media_type(path) == "image" or frames.shape[0] == 1:
        frames = frames.expand(pre.frames, *frames.shape[1:])
    elif frames.shape[0] < pre.frames:  # a very short video: repeat its last frame
        frames = torch.cat([frames, frames[-1:].expand(pre.frames - frames.shape[0], *frames.shape[1:])])
    return (transform or pre.transform())(frames)


class SegmentDataset(Dataset):
    """Items are (path, start_s, end_s); a file that fails to decode is logged and yields None
    (dropped by :func:`media_retrieval.data.datamodule.skip_failed_collate`)."""

    def __init__(self, spans: list[tuple[str, float | None, float | None]], pre: Preprocess) -> None:
        self.spans, self.pre, self.transform = spans, pre, pre.transform()

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> dict | None:
        path, start, end = self.spans[i]
        try:
            clip = load_clip(path, self.pre, start, end, self.transform)
        except (DataError, OSError, RuntimeError, ValueError) as exc:
            log.warning("skipping %s: %s", path, exc)
            return None
        return {"sample_id": i, "clip": clip}
