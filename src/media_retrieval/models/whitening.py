"""PCA whitening of clip embeddings, learned from the training clips without their labels.

Retrieval by Euclidean distance treats every direction of the embedding alike; in pooled CNN
features a few directions carry most of the variance (lighting, camera, dataset style) and
drown the rest. Whitening (Jégou & Chum, ECCV 2012) centres the embeddings, rotates them onto
their principal axes, keeps ``dim`` of them and scales each to unit variance, then
L2-normalises. It needs no labels, so it generalises to unseen classes, and it is fitted
once per validation from the embeddings of that epoch's training clips: the checkpoint of the
best epoch carries the whitening fitted with it.
"""

from __future__ import annotations

import torch
from torch import nn


class Whitening(nn.Module):
    """``(B, in_dim) -> (B, dim)`` once fitted; until then the identity, so a model that was
    never trained (nothing fitted it) embeds exactly as it would without whitening."""

    def __init__(self, in_dim: int, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.in_dim, self.dim, self.eps = int(in_dim), int(min(dim, in_dim)), eps
        self.register_buffer("mean", torch.zeros(self.in_dim))
        self.register_buffer("proj", torch.eye(self.in_dim)[:, : self.dim].clone())
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, z: torch.Tensor) -> None:
        """Principal axes of ``z`` (N, in_dim), each scaled by 1 / its standard deviation; with
        fewer than ``dim`` + 1 samples the missing axes stay zero."""
        z = z.detach().double().to(self.mean.device)
        mean = z.mean(0)
        _, s, vh = torch.linalg.svd(z - mean, full_matrices=False)
        n = min(self.dim, vh.shape[0], max(len(z) - 1, 1))
        proj = torch.zeros(self.in_dim, self.dim, dtype=torch.float64, device=z.device)
        proj[:, :n] = vh[:n].T / (s[:n] / max(len(z) - 1, 1) ** 0.5 + self.eps)
        self.mean.copy_(mean.float())
        self.proj.copy_(proj.float())
        self.fitted.fill_(True)

    @property
    def out_dim(self) -> int:
        return self.dim if bool(self.fitted) else self.in_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            return z
        return nn.functional.normalize((z - self.mean) @ self.proj, dim=-1)
