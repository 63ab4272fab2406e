"""The paper's model: a 2D CNN embeds each sampled frame, a recurrent head turns the frame
sequence into one clip embedding, and a classifier on top provides the training signal."""

from __future__ import annotations

from typing import Any

import torch

from media_retrieval.errors import ConfigError
from media_retrieval.models.backbones import create_backbone, freeze_first_blocks
from media_retrieval.models.module import ClipEmbedder, plain_dict
from media_retrieval.models.registry import register_model
from media_retrieval.models.temporal import TemporalHead


@register_model
class CNNLSTM(ClipEmbedder):
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
        freeze_backbone: bool = True,
        backbone_lr_mult: float = 1.0,
        freeze_blocks: int = 0,
        video: dict | None = None,
        *,
        name: str = "cnn_lstm",
        **common: Any,
    ) -> None:
        backbone, temporal = plain_dict(backbone), plain_dict(temporal)
        video = plain_dict(video) if video else None  # plain containers in hparams (safe loading)
        super().__init__(name=name, **common)
        self.backbone = create_backbone(**backbone)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False).eval()
        elif freeze_blocks:
            freeze_first_blocks(self.backbone.net, freeze_blocks)
        self.temporal = TemporalHead(self.backbone.num_features, **temporal)
        # a clip-level video encoder beside the frames (I3D: it has seen motion), frozen; its
        # part joins the embedding after the temporal head's, before any whitening
        self.video = None
        if video:
            from media_retrieval.models.i3d import VideoPart  # noqa: PLC0415 - models.i3d (and what it loads) stays unloaded until used

            if self.backbone.in_chans != 3:
                raise ConfigError("model.video needs RGB frames (model.backbone.in_chans=3)")
            self.video = VideoPart(**video).requires_grad_(False)
        self._init_objective()

    @property
    def encode_dim(self) -> int:
        return self.temporal.embed_dim + (self.video.dim if self.video is not None else 0)

    # ------------------------------------------------------------------ embedding
    @property
    def uses_frame_features(self) -> bool:
        return self.freeze_backbone

    @property
    def cached_clip_encoder(self) -> torch.nn.Module | None:
        """The fused I3D part's encoder, cached beside the frame features (a model trained on
        pixels computes it from the clip)."""
        return self.video.encoder if self.video is not None and self.freeze_backbone else None

    @property
    def has_trainable_embedding(self) -> bool:
        """False when training cannot change the embedding (frozen CNN + no recurrence)."""
        return (
            self.temporal.has_learned and any(p.requires_grad for p in self.temporal.parameters())
        ) or not self.freeze_backbone

    @property
    def embeds_stills(self) -> bool:
        """A centred temporal head subtracts each clip's mean frame: a still leaves nothing
        (unless the mean is among the fused statistics)."""
        return not self.temporal.center or "mean" in self.temporal.stats

    @property
    def media_gap(self) -> str | None:
        """A still is a clip whose frames never change: its ``std`` and ``diff`` statistics and a
        centred learned part are zero, where a video's are not, so stills land among stills
        (benchmarks/cross_media.py: an image query's top 5 holds 4 % videos with mean ⊕ std)."""
        t = self.temporal
        parts = [s for s in t.stats if s != "mean"]
        if t.has_learned and t.center and (not t.fused or float(t.fusion_weight) > 0):
            parts.append("learned part")
        if not parts:
            return None
        return (
            f"this model's {', '.join(parts)} {'is' if len(parts) == 1 else 'are'} zero for a "
            "still image, so "
            f"images and videos of the same content embed apart; {self.MIXED_MEDIA_FIX}"
        )

    def encoder_spec(self) -> dict:
        return self.backbone.spec()

    def pretrained_encoders(self) -> dict[str, torch.nn.Module]:
        return {
            "backbone": self.backbone,
            **({"video": self.video.encoder} if self.video is not None else {}),
        }

    def frame_features(self, clip: torch.Tensor) -> torch.Tensor:
        b, t = clip.shape[:2]
        return self.backbone(clip.flatten(0, 1)).view(b, t, -1)

    def _features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (
            batch["features"] if "features" in batch else self.frame_features(batch["clip"])
        ).float()

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D) clip embeddings before any whitening."""
        return self.encode_parts(batch)[0]

    @property
    def objective_dim(self) -> int:
        return self.temporal.learned_dim

    def encode_parts(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused encoding and its learned part (the objective's: fused statistics stay as
        the backbone made them), from one pass of the temporal head."""
        z, learned = self.temporal.parts(self._features(batch))
        if self.video is not None:
            z = torch.cat([z, self.video(batch)], dim=-1)
        return z, learned

    def train(self, mode: bool = True) -> CNNLSTM:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen BatchNorm statistics stay ImageNet's
        if self.video is not None:
            self.video.eval()
        return self

    def param_groups(self) -> list[dict]:
        """End to end (Fig. 3): the backbone learns at ``lr x backbone_lr_mult`` so fine-tuning
        does not wreck its ImageNet features; the temporal head and classifier at ``lr``."""
        if self.freeze_backbone or self.hparams.backbone_lr_mult == 1.0:
            return super().param_groups()
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        ids = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        lr = self.hparams.lr
        return [
            {"params": backbone, "lr": lr * self.hparams.backbone_lr_mult},
            {"params": rest, "lr": lr},
        ]
