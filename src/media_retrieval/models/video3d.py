"""Extra 3D-CNN baselines from pytorchvideo's model builders: R(2+1)D and X3D-XS.

pytorchvideo's hub weights cannot be fetched offline, so these start from random init. The
builders' final ``model_num_class`` layer becomes the embedding (default 256), and their
fixed-size head pools are replaced by adaptive ones so any clip length and crop size work.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from media_retrieval.errors import ConfigError
from media_retrieval.models.module import ClipEmbedder
from media_retrieval.models.registry import register_model

ARCHS = ("r2plus1d", "x3d_xs")


def build_video3d(arch: str, embed_dim: int, in_chans: int = 3, dropout: float = 0.25) -> nn.Module:
    if arch == "r2plus1d":
        from pytorchvideo.models.r2plus1d import create_r2plus1d  # noqa: PLC0415 - pytorchvideo stays unloaded until used

        net = create_r2plus1d(
            input_channel=in_chans,
            model_num_class=embed_dim,
            dropout_rate=dropout,
            head_activation=None,
        )
        net.blocks[-1].pool = nn.AdaptiveAvgPool3d(1)
        return net
    if arch == "x3d_xs":
        from pytorchvideo.models.x3d import create_x3d  # noqa: PLC0415 - pytorchvideo stays unloaded until used

        # X3D-XS: the X3D-S network (width 2.0, depth 2.2) at 4 frames x 160 px.
        net = create_x3d(
            input_channel=in_chans,
            input_clip_length=4,
            input_crop_size=160,
            model_num_class=embed_dim,
            dropout_rate=dropout,
            head_activation=None,
        )
        net.blocks[-1].pool.pool = nn.AdaptiveAvgPool3d(1)
        return net
    raise ConfigError(f"model.arch={arch!r}; valid: {', '.join(ARCHS)}")


@register_model
class Video3DModule(ClipEmbedder):
    """A pytorchvideo 3D CNN as a clip embedder, trained on pixels like C3D."""

    def __init__(
        self,
        arch: str = "r2plus1d",
        in_chans: int = 3,
        embed_dim: int = 256,
        *,
        input_size: int = 112,
        name: str | None = None,
        **common: Any,
    ) -> None:
        super().__init__(input_size=input_size, name=name or arch, **common)
        self.net = build_video3d(arch, embed_dim, in_chans, self.hparams.dropout)
        self._embed_dim = embed_dim
        self._init_objective()

    @property
    def encode_dim(self) -> int:
        return self._embed_dim

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["clip"].permute(0, 2, 1, 3, 4))
