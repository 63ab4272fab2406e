"""The model blocks' schemas (``model/*.yaml``) and the valid values of their choices.

Only hydra and omegaconf are imported here (never torch): this runs before the heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

CELLS = ("lstm", "gru", "none")


READOUTS = ("last", "mean", "last_hc")


TEMPORAL_STATS = ("mean", "std", "diff")


LOSSES = ("ce", "triplet", "supcon", "proxy_anchor", "arcface", "infonce")


POOLS = ("global", "gem", "grid2x2")


@dataclass
class LossSchema:
    name: str = MISSING
    margin: float = MISSING
    temperature: float = MISSING
    infonce_weight: float = MISSING


@dataclass
class ModelSchema:
    """``model/_base.yaml``: what every model config shares."""

    lr: float = MISSING
    weight_decay: float = MISSING
    dropout: float = MISSING
    whiten: int | None = MISSING
    compile: bool = MISSING
    optimizer: Any = MISSING  # Hydra partials
    scheduler: Any = MISSING
    loss: LossSchema = field(default_factory=LossSchema)


@dataclass
class BackboneSchema:
    name: str = MISSING
    weights: str = MISSING
    in_chans: int = MISSING
    pool: str = MISSING


@dataclass
class TemporalSchema:
    cell: str = MISSING
    num_layers: int = MISSING
    hidden: int = MISSING
    bidirectional: bool = MISSING
    readout: str = MISSING
    dropout: float = MISSING
    embed_dim: int | None = MISSING
    center: bool = MISSING
    stats: list[str] = MISSING
    fusion_weight: float = MISSING


@dataclass
class VideoPartSchema:
    """``model.video``: a frozen clip-level video encoder whose part joins the embedding."""

    name: str = "i3d"
    features: str = "both"
    weight: float = 1.0
    weights: str = "kinetics400"


@dataclass
class CNNLSTMSchema(ModelSchema):
    _target_: str = MISSING
    name: str = MISSING
    backbone: BackboneSchema = field(default_factory=BackboneSchema)
    temporal: TemporalSchema = field(default_factory=TemporalSchema)
    input_size: int = MISSING
    freeze_backbone: bool = MISSING
    backbone_lr_mult: float = MISSING
    freeze_blocks: int = MISSING
    video: VideoPartSchema | None = None


@dataclass
class C3DSchema(ModelSchema):
    _target_: str = MISSING
    name: str = MISSING
    in_chans: int = MISSING
    embed_dim: int = MISSING
    input_size: int = MISSING
    width: float = MISSING


@dataclass
class Video3DSchema(ModelSchema):
    _target_: str = MISSING
    arch: str = MISSING
    name: str = MISSING
    in_chans: int = MISSING
    embed_dim: int = MISSING
    input_size: int = MISSING


@dataclass
class I3DSchema(ModelSchema):
    _target_: str = MISSING
    name: str = MISSING
    features: str = MISSING
    weights: str = MISSING
    in_chans: int = MISSING
    input_size: int = MISSING
