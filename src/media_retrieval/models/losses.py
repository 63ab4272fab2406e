"""Training objectives: the paper's cross-entropy classifier, and metric-learning losses from
pytorch-metric-learning (the paper's future scope: "replace the classifier with ... Siamese
networks"), which act on the embedding directly.

``model.loss.name``: ``ce`` | ``triplet`` (margin loss on hard triplets mined in the batch) |
``supcon`` (supervised contrastive) | ``proxy_anchor`` | ``arcface`` (proxy-based; their
proxies are trained parameters). Metric losses want several clips per class in a batch:
``data.m_per_class`` turns on class-balanced batches.

``infonce`` needs no labels: two views of one video are positives, every other clip of the
batch a negative (:class:`ViewContrastiveLoss`); ``loss.infonce_weight`` adds it to any of
the supervised objectives.
"""

from __future__ import annotations

import torch
from torch import nn

from media_retrieval.config.model import LOSSES  # noqa: F401 - re-exported: valid values live with the schemas
from media_retrieval.errors import ConfigError


class MetricLoss(nn.Module):
    """A pytorch-metric-learning loss (and optional miner) as ``loss(embeddings, labels)``."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        indices = self.miner(z, labels) if self.miner is not None else None
        return self.loss(z, labels, indices)


class ViewContrastiveLoss(nn.Module):
    """InfoNCE over two views per clip: pytorch-metric-learning's NT-Xent (SimCLR's form, the
    other view of each clip its positive, the 2B - 2 other views its negatives)."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        from pytorch_metric_learning import losses  # noqa: PLC0415 - pytorch_metric_learning stays unloaded until used

        self.loss = losses.NTXentLoss(temperature=temperature)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        ids = torch.arange(z_a.shape[0], device=z_a.device)
        return self.loss(torch.cat([z_a, z_b]), torch.cat([ids, ids]))


def infonce_weight(cfg: dict) -> float:
    """How much InfoNCE counts in the objective: all of it for ``infonce``, else
    ``infonce_weight``."""
    return 1.0 if cfg.get("name") == "infonce" else float(cfg.get("infonce_weight") or 0.0)


def build_metric_loss(cfg: dict, num_classes: int, embed_dim: int) -> MetricLoss | None:
    """None for ``ce`` (the classifier head is the objective) and ``infonce`` (no labels)."""
    name = cfg.get("name", "ce")
    if name not in LOSSES:
        raise ConfigError(f"model.loss.name={name!r}; valid: {', '.join(LOSSES)}")
    if name in ("ce", "infonce"):
        return None
    from pytorch_metric_learning import losses, miners  # noqa: PLC0415 - pytorch_metric_learning stays unloaded until used

    if name == "triplet":
        margin = float(cfg.get("margin", 0.1))
        return MetricLoss(
            losses.TripletMarginLoss(margin=margin),
            miners.TripletMarginMiner(margin=margin, type_of_triplets=cfg.get("triplets", "hard")),
        )
    if name == "supcon":
        return MetricLoss(losses.SupConLoss(temperature=float(cfg.get("temperature", 0.1))))
    if name == "proxy_anchor":
        return MetricLoss(
            losses.ProxyAnchorLoss(
                num_classes,
                embed_dim,
                margin=float(cfg.get("margin", 0.1)),
                alpha=float(cfg.get("alpha", 32)),
            )
        )
    return MetricLoss(
        losses.ArcFaceLoss(
            num_classes,
            embed_dim,
            margin=float(cfg.get("arc_margin", 28.6)),
            scale=float(cfg.get("scale", 64)),
        )
    )
