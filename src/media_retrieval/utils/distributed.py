"""Gathering per-sample embeddings from every rank, de-duplicated by sample id.

Ranks hold different numbers of samples, and the DistributedSampler repeats samples to even
them out. :class:`EmbeddingCollector` is a torchmetrics ``Metric`` with ``cat`` states: its
rank sync gathers tensors of uneven lengths; :meth:`EmbeddingCollector.compute` then keeps
one copy of each id, sorted by id, so the result does not depend on the number of ranks.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class EmbeddingCollector(Metric):
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("vectors", default=[], dist_reduce_fx="cat")

    def update(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        self.ids.append(ids.long().reshape(-1))
        self.vectors.append(vectors.float())  # (B, D)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, vectors) of every rank, one per id, sorted by id."""
        ids, vectors = dim_zero_cat(self.ids), dim_zero_cat(self.vectors)
        order = torch.argsort(ids, stable=True)
        ids, vectors = ids[order], vectors[order]
        first = torch.ones_like(ids, dtype=torch.bool)
        first[1:] = ids[1:] != ids[:-1]
        return ids[first], vectors[first]


def gather_by_id(
    collector: EmbeddingCollector, world_size: int, all_gather
) -> tuple[torch.Tensor, torch.Tensor]:
    """``collector.compute()`` that also works when this rank collected nothing: torchmetrics
    gathers tensors of one rank count, so an empty rank first learns the embedding width from
    the others (``all_gather``: a collective every rank calls when ``world_size`` > 1)."""
    empty = not collector.ids
    if world_size > 1:
        width = torch.tensor(
            [0 if empty else collector.vectors[0].shape[-1]], device=collector.device
        )
        width = int(all_gather(width).max())
        if empty:
            collector.update(
                torch.zeros(0, dtype=torch.long, device=collector.device),
                torch.zeros(0, width, device=collector.device),
            )
    elif empty:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, 1)
    ids, vectors = collector.compute()
    return ids.cpu(), vectors.cpu()
