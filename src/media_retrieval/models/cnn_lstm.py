"""The paper's model: a 2D CNN embeds each sampled frame, a recurrent head turns the frame
sequence into one clip embedding, and a classifier on top provides the training signal."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from media_retrieval.models.backbones import create_backbone
from media_retrieval.models.temporal import TemporalHead


def _plain(cfg: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class CNNLSTM(L.LightningModule):
    """2D CNN + LSTM/GRU (or mean pooling) clip embedder.

    With ``freeze_backbone`` (the paper's main setting) the CNN is a fixed feature extractor:
    the DataModule then serves cached frame features and only the temporal head and classifier
    train. ``embed`` accepts either ``features`` (B, T, F) or ``clip`` (B, T, C, H, W), so the
    same checkpoint embeds raw media for search.
    """

    def __init__(
        self,
        backbone: dict,
        temporal: dict,
        num_classes: int = 0,
        train_classes: list[str] | None = None,
        freeze_backbone: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        dropout: float = 0.25,
        name: str = "cnn_lstm",
    ) -> None:
        super().__init__()
        # Plain containers only: checkpoints must load with torch.load(weights_only=True).
        backbone, temporal = _plain(backbone), _plain(temporal)
        train_classes = list(train_classes) if train_classes is not None else None
        self.save_hyperparameters()
        self.backbone = create_backbone(**backbone)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False).eval()
        self.temporal = TemporalHead(self.backbone.num_features, **temporal)
        self.classifier = (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(self.temporal.embed_dim, num_classes))
            if num_classes > 0 else None
        )

    def set_classes(self, train_classes: list[str]) -> None:
        """Size the classifier for the training classes (known only once the split exists);
        recorded in hparams so a checkpoint knows what was *seen*."""
        self.hparams["train_classes"] = list(train_classes)
        self.hparams["num_classes"] = len(train_classes)
        if self.classifier is None or self.classifier[-1].out_features != len(train_classes):
            self.classifier = nn.Sequential(
                nn.Dropout(self.hparams.dropout), nn.Linear(self.temporal.embed_dim, len(train_classes))
            )

    # ------------------------------------------------------------------ embedding
    @property
    def uses_frame_features(self) -> bool:
        return self.freeze_backbone

    @property
    def has_trainable_embedding(self) -> bool:
        """False when training cannot change the embedding (frozen CNN + no recurrence)."""
        return any(p.requires_grad for p in self.temporal.parameters()) or not self.freeze_backbone

    def encoder_spec(self) -> dict:
        return self.backbone.spec()

    def frame_features(self, clip: torch.Tensor) -> torch.Tensor:
        b, t = clip.shape[:2]
        return self.backbone(clip.flatten(0, 1)).view(b, t, -1)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D) clip embeddings: the one method every retrieval path calls."""
        feats = batch["features"] if "features" in batch else self.frame_features(batch["clip"])
        return self.temporal(feats.float())

    def train(self, mode: bool = True) -> CNNLSTM:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen BatchNorm statistics stay ImageNet's
        return self

    # ------------------------------------------------------------------ steps
    def _classify(self, batch: dict[str, torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.classifier is not None, "num_classes=0: this model has no classifier to train"
        logits = self.classifier(z)
        return F.cross_entropy(logits, batch["target"]), (logits.argmax(-1) == batch["target"]).float().mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, acc = self._classify(batch, self.embed(batch))
        bs = batch["target"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/acc", acc, batch_size=bs)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, Any]:
        z = self.embed(batch)
        known = batch["target"] >= 0
        if self.classifier is not None and bool(known.all()):
            loss, acc = self._classify(batch, z)
            bs = batch["target"].shape[0]
            self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=bs)
            self.log(f"{stage}/acc", acc, sync_dist=True, batch_size=bs)
        return {"embedding": z.detach(), "sample_id": batch["sample_id"]}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        return {"embedding": self.embed(batch), "sample_id": batch["sample_id"]}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
