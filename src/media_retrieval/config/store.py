"""Hydra's ConfigStore entries of every schema, the resolvers the configs use, and the
choice and bound checks run right after composition.

Only hydra and omegaconf are imported here (never torch): this runs before the heavy imports."""

from __future__ import annotations

import dataclasses
import typing

from omegaconf import DictConfig, OmegaConf

from media_retrieval.config.clip import DECODERS, ClipSpec, check_clip_node
from media_retrieval.config.data import (
    LABELS,
    BuiltinDataSchema,
    Cifar10DataSchema,
    CrossDataSchema,
    DataSchema,
    FolderDataSchema,
    Oxford5kDataSchema,
)
from media_retrieval.config.index import BACKENDS, INDEX_PRECISIONS, IndexSchema
from media_retrieval.config.model import (
    CELLS,
    LOSSES,
    POOLS,
    READOUTS,
    TEMPORAL_STATS,
    C3DSchema,
    CNNLSTMSchema,
    I3DSchema,
    ModelSchema,
    Video3DSchema,
)
from media_retrieval.config.paths import home_dir, real_clips_dir
from media_retrieval.config.retrieval import RetrievalSchema
from media_retrieval.errors import ConfigError
from media_retrieval.utils.devices import clips_per_batch, decode_workers

#: (config key, valid values): what :func:`check_choices` asks of a composed config
CHOICES: list[tuple[str, tuple[str, ...]]] = [
    ("decoder", DECODERS),  # search and serve: how queries are decoded
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
    ("data.num_workers", 0),
    ("trainer.max_epochs", -1),
    ("model.lr", 0.0),
    ("model.dropout", 0.0),
    ("batch_size", 1),
    ("k", 1),
    ("model.temporal.hidden", 1),
    ("model.temporal.num_layers", 1),
    ("model.temporal.embed_dim", 1),
    ("model.embed_dim", 1),
    ("model.whiten", 1),
    ("num_workers", 0),
    ("retrieval.table_k", 1),
    ("index.lock_wait_s", 0.0),
    ("model.loss.infonce_weight", 0.0),
    ("model.loss.temperature", 1e-4),
    ("data.dense_frames", 1),
]


#: ConfigStore group -> {name: schema}; a YAML names one as ``/schema/data/folder@_here_``
SCHEMAS: dict[str, dict[str, type]] = {
    "schema": {"retrieval": RetrievalSchema, "index": IndexSchema},
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
    for name, node in clip_schemas().items():
        cs.store(group="schema", name=name, node=node)


def clip_schemas() -> dict[str, DictConfig]:
    """The ``clip`` node's schemas, made from :class:`ClipSpec` itself (so a field added there is
    a config key at once): ``clip`` (every field set: ``configs/clip/default.yaml``) and
    ``clip_override`` (each field may be null, "the model's own": ``configs/clip/model.yaml``).
    ClipSpec is frozen, which OmegaConf turns into a read-only node; the node is made writable
    so command-line overrides and ``open_dict`` edits apply as to any other block."""
    full = OmegaConf.structured(ClipSpec)
    OmegaConf.set_readonly(full, None)
    hints = typing.get_type_hints(ClipSpec)
    optional = dataclasses.make_dataclass(
        "ClipOverride",
        [(f.name, typing.Optional[hints[f.name]], None) for f in dataclasses.fields(ClipSpec)],  # noqa: UP045 - a runtime type
    )
    return {"clip": full, "clip_override": OmegaConf.structured(optional)}


def check_choices(cfg: DictConfig) -> None:
    """Each choice key that is set holds one of its valid values, and each bounded number is
    within its bound; raises ``ConfigError`` with one line. The clip node goes first: its keys
    resolve without touching the device (``batch_size`` asks torch for one)."""
    for where in ("data.clip", "clip"):
        check_clip_node(OmegaConf.select(cfg, where, default=None), where)
    for key, valid in CHOICES:
        v = OmegaConf.select(cfg, key, default=None)
        for one in list(v) if OmegaConf.is_list(v) else [v]:  # a list: each of its values
            if one is not None and one not in valid:
                raise ConfigError(f"{key}={one!r}; valid: {', '.join(valid)}")
    for key, low in MINIMUMS:
        v = OmegaConf.select(cfg, key, default=None)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < low:
            raise ConfigError(f"{key} must be >= {low}, got {v}")
