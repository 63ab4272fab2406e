"""Euclidean ranking of a gallery for a batch of queries, in chunks of queries.

Chunking bounds memory to ``chunk x gallery`` distances whatever the number of queries.
Ties are broken by gallery order (a stable sort), so rankings are reproducible.
"""

from __future__ import annotations

import torch


def squared_euclidean(q: torch.Tensor, g: torch.Tensor, g_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(Q, G) squared distances via ||q||^2 + ||g||^2 - 2 q.g (one matrix multiply)."""
    if g_sq is None:
        g_sq = (g * g).sum(-1)
    d = (q * q).sum(-1, keepdim=True) + g_sq.unsqueeze(0) - 2.0 * (q @ g.T)
    return d.clamp_min_(0.0)


def cosine(q: torch.Tensor, g: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity of each query row with the matching gallery rows: q (Q, D), g (Q, k, D)."""
    qn = q / q.norm(dim=-1, keepdim=True).clamp_min(eps)
    gn = g / g.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.einsum("qd,qkd->qk", qn, gn)
