"""Structured-config schemas: the types of the config blocks every entry point shares, and the
valid values of each choice, checked when the config is composed (well under a second, before
torch is imported) instead of minutes into a run.

Registered in Hydra's ConfigStore under ``schema/`` by :func:`register`; each block's YAML names
its schema in its defaults list (``/schema/data/folder@_here_``), so Hydra merges the YAML onto
the typed node: a wrong type (``data.frames=abc``) or an unknown key fails at composition.
Datasets and models extend the shared blocks with schemas of their own (subclasses). Choices are
plain strings in the config (enum
values would reach checkpoints, which load only plain types): :func:`check_choices` checks them
right after composition, from the tuples here, which the code that uses each value imports.

Only hydra and omegaconf are imported: this runs before the heavy imports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from media_retrieval.errors import ConfigError

# ---------------------------------------------------------------------- valid values (one home)
RESIZE_MODES = ("short_side_crop", "stretch")
SAMPLINGS = ("index", "time")
DECODERS = ("seek", "decode_all")
CELLS = ("lstm", "gru", "none")
READOUTS = ("last", "mean", "last_hc")
TEMPORAL_STATS = ("mean", "std", "diff")
LOSSES = ("ce", "triplet", "supcon", "proxy_anchor", "arcface", "infonce")
BACKENDS = ("exact", "flat", "ivf", "hnsw", "ivfpq", "milvus")
POOLS = ("global", "gem", "grid2x2")
LABELS = ("class", "none")
INDEX_PRECISIONS = ("auto", "fp32", "bf16")

#: (config key, valid values): what :func:`check_choices` asks of a composed config
CHOICES: list[tuple[str, tuple[str, ...]]] = [
    ("data.resize", RESIZE_MODES),
    ("preprocess.resize", RESIZE_MODES),
    ("data.sampling", SAMPLINGS),
    ("preprocess.sampling", SAMPLINGS),
    ("data.decoder", DECODERS),
    ("preprocess.decoder", DECODERS),
    ("decoder", DECODERS),
    ("model.temporal.cell", CELLS),
    ("model.temporal.readout", READOUTS),
    ("model.loss.name", LOSSES),
    ("index.backend", BACKENDS),
    ("model.temporal.stats", TEMPORAL_STATS),
    ("model.backbone.pool", POOLS),
    ("data.labels", LABELS),
    ("index.precision", INDEX_PRECISIONS),
]

# (config key, minimum): numbers that cannot work below a bound (types come from the schemas)
MINIMUMS: list[tuple[str, float]] = [
    ("data.batch_size", 1),
    ("data.eval_batch_size", 1),
    ("data.frames", 1),
    ("data.image_size", 8),
    ("data.num_workers", 0),
    ("trainer.max_epochs", -1),
    ("model.lr", 0.0),
    ("model.dropout", 0.0),
    ("batch_size", 1),
    ("k", 1),
    ("preprocess.frames", 1),
    ("preprocess.image_size", 8),
    ("model.temporal.hidden", 1),
    ("model.temporal.num_layers", 1),
    ("model.temporal.embed_dim", 1),
    ("model.embed_dim", 1),
    ("model.whiten", 1),
    ("num_workers", 0),
    ("retrieval.table_k", 1),
    ("data.chunk_s", 0.001),
    ("preprocess.chunk_s", 0.001),
    ("index.lock_wait_s", 0.0),
    ("model.loss.infonce_weight", 0.0),
    ("model.loss.temperature", 1e-4),
    ("data.dense_frames", 1),
]


def stored_delta(value: object) -> float | None:
    """A δ read from a checkpoint or an index manifest (data someone handed us): a number in
    [-1, 1], anything else ignored (None)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and -1.0 <= value <= 1.0
    return float(value) if ok else None


#: PAR's δ when nothing chose one (``retrieval.par.delta=auto`` and no δ chosen on validation
#: recorded with the model or index): the paper's value. The one δ default in code and configs;
#: only the δ grid (``retrieval.par.deltas``) holds other literals.
DEFAULT_DELTA = 0.8


@dataclass(frozen=True)
class DeltaChoice:
    """The δ a run, a search or a report uses, and where it came from: ``given`` (a number the
    user set), ``validation`` (chosen on validation clips, recorded with the model or index) or
    ``default`` (:data:`DEFAULT_DELTA`)."""

    value: float
    how: str

    @property
    def note(self) -> str:
        """How titles say where δ came from (nothing for a number the user gave)."""
        return {"given": "", "validation": " chosen on validation", "default": " (default)"}[
            self.how
        ]


def resolve_delta(requested: object, recorded: object = None) -> DeltaChoice:
    """The one place ``auto`` is resolved. ``requested``: the user's ``retrieval.par.delta`` (a
    number in [-1, 1], ``auto``, or None for nothing asked = auto); ``recorded``: the δ a
    checkpoint, index or run recorded (data: checked with :func:`stored_delta`)."""
    if requested is None or requested == "auto":
        chosen = stored_delta(recorded)
        return (
            DeltaChoice(DEFAULT_DELTA, "default")
            if chosen is None
            else DeltaChoice(chosen, "validation")
        )
    value = stored_delta(requested)
    if value is None:
        raise ConfigError(
            f"retrieval.par.delta={str(requested)[:40]}: a number in [-1, 1] (cosine) or auto"
        )
    return DeltaChoice(value, "given")


# ---------------------------------------------------------------------- schemas
# Every field is MISSING: the YAML files hold the values (one home for defaults), the schemas
# the types. A MISSING field never overwrites a value when a more specific schema is merged
# onto a block (``data/folder`` onto ``data/_base``), so a block can be re-typed as it is built.
@dataclass
class ParSchema:
    delta: Any = MISSING  # a number in [-1, 1] or "auto" (config_checks.py checks which)
    deltas: list[float] = MISSING


@dataclass
class RetrievalSchema:
    k: list[int] = MISSING
    table_k: int | None = MISSING
    exclude_same_video: bool = MISSING
    par: ParSchema = field(default_factory=ParSchema)


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

    frames: int = MISSING
    image_size: int = MISSING
    resize: str = MISSING
    in_chans: int = MISSING
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
    decoder: str = MISSING
    sampling: str = MISSING
    chunk_s: float | None = MISSING
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


@dataclass
class PreprocessSchema:
    """``index.yaml``'s ``preprocess:``: null = the model's own clip spec."""

    frames: int | None = MISSING
    image_size: int | None = MISSING
    resize: str | None = MISSING
    in_chans: int | None = MISSING
    sampling: str | None = MISSING
    chunk_s: float | None = MISSING
    decoder: str = MISSING


@dataclass
class PcaSchema:
    enabled: bool = MISSING
    variance: float = MISSING
    dim: int | None = MISSING


@dataclass
class BackendOptionsSchema:
    nlist: int | None = MISSING
    nprobe: int = MISSING
    hnsw_m: int = MISSING
    ef_search: int = MISSING
    ef_construction: int = MISSING
    pq_m: int = MISSING
    pq_bits: int = MISSING
    kmeans_clusters: int = MISSING
    kmeans_probe: int = MISSING
    seed: int = MISSING
    milvus_uri: str | None = MISSING
    milvus_collection: str = MISSING
    milvus_index: str = MISSING


@dataclass
class IndexSchema:
    """``index.yaml``'s ``index:``."""

    backend: str = MISSING
    rebuild: bool = MISSING
    lock_wait_s: float = MISSING
    precision: str = MISSING
    pca: PcaSchema = field(default_factory=PcaSchema)
    options: BackendOptionsSchema = field(default_factory=BackendOptionsSchema)


#: ConfigStore group -> {name: schema}; a YAML names one as ``/schema/data/folder@_here_``
SCHEMAS: dict[str, dict[str, type]] = {
    "schema": {"retrieval": RetrievalSchema, "preprocess": PreprocessSchema, "index": IndexSchema},
    "schema/data": {
        "base": DataSchema,
        "builtin": BuiltinDataSchema,
        "folder": FolderDataSchema,
        "cifar10": Cifar10DataSchema,
        "oxford5k": Oxford5kDataSchema,
        "cross": CrossDataSchema,
    },
    "schema/model": {
        "base": ModelSchema,
        "cnn_lstm": CNNLSTMSchema,
        "c3d": C3DSchema,
        "video3d": Video3DSchema,
        "i3d": I3DSchema,
    },
}


def home_dir() -> str:
    """Where ``data/``, ``logs/`` and ``.cache/`` live (``paths.root_dir``):
    ``$MEDIA_RETRIEVAL_HOME``,
    else ``$PROJECT_ROOT`` (set by ``src/*.py`` and the tests to the repository), else the
    working directory (installed commands)."""
    return os.path.abspath(
        os.environ.get("MEDIA_RETRIEVAL_HOME") or os.environ.get("PROJECT_ROOT") or os.getcwd()
    )


def real_clips_dir(root: str | None = None) -> str:
    """The shared real footage (``paths.real_clips_dir``): ``$MEDIA_RETRIEVAL_REAL_CLIPS``, else
    ``../shared/data/real-clips`` beside ``root`` (default :func:`home_dir`). The one place that
    says where it is: configs, benchmarks and tests all ask here."""
    env = os.environ.get("MEDIA_RETRIEVAL_REAL_CLIPS")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.normpath(os.path.join(root or home_dir(), "..", "shared", "data", "real-clips"))


def decode_workers() -> int:
    """Default decoding processes (``num_workers``): one per core but one (the main process
    runs the model), at most 16. On 2 cores that is 1; a 16-core GPU machine gets 15, which
    took indexing from 55 s to 7.9 s there (issue 16)."""
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def accelerator_device(accelerator: str = "auto") -> str:
    """The device type a ``trainer.accelerator`` setting embeds on: ``cuda`` or ``cpu``."""
    import torch  # noqa: PLC0415 - torch stays unloaded until used

    accelerator = str(accelerator)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "cuda" if on_gpu else "cpu"


def clips_per_batch(accelerator: str = "auto") -> int:
    """Default clips per forward pass of an index build (``batch_size``): 32 on a GPU; 1 on a
    CPU, where a 16-frame batch runs Lite0 at 110 frames/s and a 128-frame one at 60 (the
    activations of a large batch fall out of cache; benchmarks/README.md, issue 16)."""
    return 32 if accelerator_device(accelerator) == "cuda" else 1


def register() -> None:
    """Put the schemas in Hydra's ConfigStore and the ``mr_home`` resolver (``paths.root_dir``)
    in OmegaConf; call before composing (the entry points' launcher and the tests' compose
    helper do)."""
    from hydra.core.config_store import ConfigStore  # noqa: PLC0415 - hydra stays unloaded until used

    if not OmegaConf.has_resolver("mr_home"):
        OmegaConf.register_new_resolver("mr_home", home_dir)
    if not OmegaConf.has_resolver("mr_real_clips"):
        OmegaConf.register_new_resolver("mr_real_clips", real_clips_dir)
    if not OmegaConf.has_resolver("mr_workers"):
        OmegaConf.register_new_resolver("mr_workers", decode_workers)
    if not OmegaConf.has_resolver("mr_batch"):
        OmegaConf.register_new_resolver("mr_batch", clips_per_batch)
    cs = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            cs.store(group=group, name=name, node=schema)


def check_choices(cfg: DictConfig) -> None:
    """Each choice key that is set holds one of its valid values, and each bounded number is
    within its bound; raises ``ConfigError`` with one line."""
    for key, valid in CHOICES:
        v = OmegaConf.select(cfg, key, default=None)
        for one in list(v) if OmegaConf.is_list(v) else [v]:  # a list: each of its values
            if one is not None and one not in valid:
                raise ConfigError(f"{key}={one!r}; valid: {', '.join(valid)}")
    for key, low in MINIMUMS:
        v = OmegaConf.select(cfg, key, default=None)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < low:
            raise ConfigError(f"{key} must be >= {low}, got {v}")
