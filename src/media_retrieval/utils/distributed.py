"""Gathering per-sample tensors from every rank without relying on equal lengths.

``LightningModule.all_gather`` needs the same shape on every rank, but ranks hold different
numbers of samples, and the DistributedSampler repeats samples to even them out. So each
rank pads to the longest rank with id -1, we gather, drop the padding and keep one copy of
each id (sorted by id, so the result does not depend on the number of ranks).
"""

from __future__ import annotations

import lightning as L
import torch


def gather_by_id(module: L.LightningModule, ids: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, values) from all ranks, de-duplicated by id and sorted by id."""
    ids = ids.long().to(module.device)
    values = values.to(module.device)
    world = module.trainer.world_size if module._trainer is not None else 1
    if world > 1:
        # a rank that saw no samples holds a (0, 1) placeholder: agree on the width as well
        meta = torch.tensor([ids.numel(), values.shape[-1] if ids.numel() else 0], device=module.device)
        sizes = module.all_gather(meta).reshape(-1, 2)
        longest, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        if ids.numel() == 0:
            values = values.new_zeros((0, *(values.shape[1:-1]), width))
        pad = longest - ids.numel()
        ids = torch.cat([ids, ids.new_full((pad,), -1)])
        values = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
        ids = module.all_gather(ids).reshape(-1)
        values = module.all_gather(values).reshape(-1, *values.shape[1:])
        keep = ids >= 0
        ids, values = ids[keep], values[keep]
    ids, values = ids.cpu(), values.cpu()
    order = torch.argsort(ids, stable=True)
    ids, values = ids[order], values[order]
    first = torch.ones_like(ids, dtype=torch.bool)
    first[1:] = ids[1:] != ids[:-1]
    return ids[first], values[first]
