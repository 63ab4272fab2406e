"""The index and search blocks' schemas (``index.yaml``) and the valid values of their choices.
The build's ``clip`` node is typed by ClipSpec itself (:mod:`.clip`).

Only hydra and omegaconf are imported here (never torch): this runs before the heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

BACKENDS = ("exact", "flat", "ivf", "hnsw", "ivfpq", "milvus")


INDEX_PRECISIONS = ("auto", "fp32", "bf16")


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
