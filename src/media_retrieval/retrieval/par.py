"""Proximal affinity re-ranking (PAR), Ravi & Nandakumar 2021, Algorithm 1.

Of the top-k gallery items by Euclidean distance, keep those whose cosine similarity with the
query is strictly greater than delta, in their Euclidean order. Euclidean distance gathers the
nearby items; the cosine test drops those that point another way from the origin.
"""

from __future__ import annotations

import torch


def par_keep(topk_cosine: torch.Tensor, delta: float) -> torch.Tensor:
    """Boolean mask (Q, k) of kept items: ``cos > delta`` (strict, as in the paper)."""
    return topk_cosine > delta


def par_rerank(topk_indices: torch.Tensor, topk_cosine: torch.Tensor, delta: float) -> list[torch.Tensor]:
    """Per query, the kept gallery indices in Euclidean order (lists may be empty)."""
    keep = par_keep(topk_cosine, delta)
    return [idx[m] for idx, m in zip(topk_indices, keep, strict=True)]
