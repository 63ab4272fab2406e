"""C3D (Tran et al. 2015), the paper's 3D-CNN baseline, with a 256-d embedding layer.

Written here because neither torchvision nor pytorchvideo ships C3D. The layout is the
original: 8 3x3x3 convolutions (64, 128, 256x2, 512x2, 512x2), five max-pools (the first
spatial only), fc6 and fc7 of 4096, then a 256-d embedding before the classifier. An adaptive
average pool before fc6 gives fc6 the native 512x1x4x4 input whatever the clip size, so
16x112x112 (native), 16x224x224 (the paper's CNN+LSTM input) and small test clips all work.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from media_retrieval.models.module import ClipEmbedder
from media_retrieval.models.registry import register_model


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel_size=3, padding=1), nn.ReLU(inplace=True)]


class C3D(nn.Module):
    def __init__(
        self, in_chans: int = 3, embed_dim: int = 256, dropout: float = 0.25, width: float = 1.0
    ) -> None:
        super().__init__()
        c = [max(8, int(round(w * width))) for w in (64, 128, 256, 512, 512)]
        fc = max(64, int(round(4096 * width)))
        self.features = nn.Sequential(
            *_conv(in_chans, c[0]),
            nn.MaxPool3d((1, 2, 2), (1, 2, 2), ceil_mode=True),
            *_conv(c[0], c[1]),
            nn.MaxPool3d(2, 2, ceil_mode=True),
            *_conv(c[1], c[2]),
            *_conv(c[2], c[2]),
            nn.MaxPool3d(2, 2, ceil_mode=True),
            *_conv(c[2], c[3]),
            *_conv(c[3], c[3]),
            nn.MaxPool3d(2, 2, ceil_mode=True),
            *_conv(c[3], c[4]),
            *_conv(c[4], c[4]),
            nn.MaxPool3d(2, 2, ceil_mode=True),
        )
        self.pool = nn.AdaptiveAvgPool3d((1, 4, 4))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c[4] * 16, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, embed_dim),
        )
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, embed_dim)."""
        return self.head(self.pool(self.features(x)))


@register_model
class C3DModule(ClipEmbedder):
    """C3D trained end to end on pixels (no frame-feature cache); ``embed`` takes ``clip``
    (B, T, C, H, W) like every other model. ``width`` < 1 scales every layer (for tests)."""

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 256,
        width: float = 1.0,
        *,
        lr: float = 0.005,
        input_size: int = 112,
        name: str = "c3d",
        **common: Any,
    ) -> None:
        super().__init__(lr=lr, input_size=input_size, name=name, **common)
        self.net = C3D(in_chans, embed_dim, self.hparams.dropout, width)
        self._init_objective()

    @property
    def encode_dim(self) -> int:
        return self.net.embed_dim

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["clip"].permute(0, 2, 1, 3, 4))
