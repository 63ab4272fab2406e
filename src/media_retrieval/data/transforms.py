"""Frame preprocessing shared by training, evaluation and search.

Own small transform instead of ``pytorchvideo.transforms``: that module cannot import with
torchvision >= 0.17 (it needs the removed ``functional_tensor``). torchvision.transforms.v2
functional ops do the actual work.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import v2

from media_retrieval.config.clip import RESIZE_MODES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClipTransform:
    """uint8 (T, C, H, W) -> float (T, C, size, size), scaled to [0, 1] and normalised.

    ``short_side_crop`` resizes the short side to ``size`` and centre-crops (keeps aspect);
    ``stretch`` resizes the whole frame to ``size`` x ``size`` (the reference pipeline).
    """

    def __init__(
        self,
        size: int = 224,
        resize: str = "short_side_crop",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        in_chans: int = 3,
    ) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize={resize!r}; valid: {', '.join(RESIZE_MODES)}")
        self.size, self.resize, self.in_chans = size, resize, in_chans
        self.mean, self.std = list(mean), list(std)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.resize_frames(frames))

    def resize_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> uint8 frames of the final size (the part two encoders that differ only
        in normalisation can share: one decode feeds both feature caches)."""
        if self.resize == "stretch":
            return TF.resize(frames, [self.size, self.size], antialias=True)
        x = TF.resize(frames, self.size, antialias=True)
        return TF.center_crop(x, [self.size, self.size])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 frames of the final size -> float, [0, 1], channels as the model expects."""
        x = x.float().div_(255.0)
        if self.in_chans == 1:
            x = TF.rgb_to_grayscale(x)
            return TF.normalize(x, [sum(self.mean) / 3], [sum(self.std) / 3])
        return TF.normalize(x, self.mean, self.std)

    def spec(self) -> dict:
        """What changes the output; part of the feature-cache key."""
        return {
            "size": self.size,
            "resize": self.resize,
            "mean": self.mean,
            "std": self.std,
            "in_chans": self.in_chans,
        }


class TrainClipTransform(ClipTransform):
    """Training-time augmentation of a whole clip, the same draw for every frame (so motion
    stays coherent): random resized crop (``scale`` of the area, aspect 3/4..4/3) and a
    horizontal flip with probability ``hflip``. Temporal jitter happens at sampling time."""

    def __init__(
        self, size: int = 224, scale: tuple[float, float] = (0.6, 1.0), hflip: float = 0.5, **kwargs
    ) -> None:
        super().__init__(size, **kwargs)
        self.scale, self.hflip = tuple(scale), float(hflip)

    def __call__(self, frames: torch.Tensor, flip: bool | None = None) -> torch.Tensor:
        """``flip``: decided by the caller (who may have to change the label with it); None =
        with probability ``hflip``."""

        i, j, h, w = v2.RandomResizedCrop.get_params(
            frames, scale=list(self.scale), ratio=[3 / 4, 4 / 3]
        )
        x = TF.resized_crop(frames, i, j, h, w, [self.size, self.size], antialias=True)
        if (torch.rand(()) < self.hflip) if flip is None else flip:
            x = TF.horizontal_flip(x)
        return self.normalize(x)
