"""The data blocks' schemas (``data/*.yaml``) and the valid values of their choices.

Only hydra and omegaconf are imported here (never torch): this runs before the heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

# ---------------------------------------------------------------------- valid values (one home)
LABELS = ("class", "none")


@dataclass
class AugmentSchema:
    enabled: bool = MISSING
    temporal_jitter: bool = MISSING
    scale: list[float] = MISSING
    hflip: float = MISSING
    flip_pairs: Any = MISSING  # [[move_left, move_right], ...]: a flip swaps the pair's labels
    no_flip: list[str] = MISSING  # classes never flipped (direction-defined, without a pair)


@dataclass
class DataSchema:
    """``data/_base.yaml``: what every data config shares."""

    clip: Any = MISSING  # the clip node: schema ClipSpec (config/clip.py), clip/default.yaml
    batch_size: int = MISSING
    eval_batch_size: int | None = MISSING
    num_workers: int = MISSING
    val_fraction: float = MISSING
    query_fraction: float = MISSING
    seed: int = MISSING
    cache_dir: str | None = MISSING
    output_dir: str | None = MISSING
    split_file: str | None = MISSING
    feature_batch_size: int = MISSING
    skip_short: bool = MISSING
    augment: AugmentSchema = field(default_factory=AugmentSchema)
    m_per_class: int | None = MISSING
    labels: str = MISSING
    dense_frames: int | None = MISSING


@dataclass
class BuiltinDataSchema(DataSchema):
    _target_: str = MISSING
    root: str = MISSING
    corpus: Any = MISSING
    source: str = MISSING
    test: list[str] = MISSING
    held_out_classes: list[str] = MISSING
    protocol: str = MISSING


@dataclass
class FolderDataSchema(DataSchema):
    """``data=folder`` and the presets built on it (ucf101, hmdb51, kth, ucf50)."""

    _target_: str = MISSING
    roots: Any = MISSING  # {name: folder} or null
    root: str | None = MISSING
    unseen_classes: Any = MISSING  # a share (0.5) or a list of class names
    test_fraction: float = MISSING
    protocol: str = MISSING
    kinds: list[str] = MISSING
    dedupe: bool = MISSING
    preset: str | None = MISSING
    split: int = MISSING


@dataclass
class Cifar10DataSchema(FolderDataSchema):
    cifar_root: str = MISSING
    download: bool = MISSING
    train_classes: list[str] = MISSING


@dataclass
class Oxford5kDataSchema(FolderDataSchema):
    images_dir: str = MISSING
    gt_dir: str = MISSING
    arranged_dir: str = MISSING


@dataclass
class CrossDataSchema(DataSchema):
    _target_: str = MISSING
    source: Any = MISSING  # {name, root}
    min_clips: int = MISSING
    targets: Any = MISSING  # {dataset: root or null}
    class_map: Any = None
    dedupe_by_content: bool = MISSING
    sources: Any = None  # {set: root}: several training sets (real footage) instead of source
    held_out_fraction: float = 0.0  # of each training class's videos, tested as seen-held-out
