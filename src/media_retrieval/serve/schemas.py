"""What the service answers, as typed schemas (the OpenAPI page at ``/docs`` is made from
them). A hit mirrors :class:`~media_retrieval.retrieval.media_index.Hit`, minus the absolute
path: clients see paths relative to the index's media root only."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SearchHit(BaseModel):
    rank: int
    key: str = Field(description="stable segment key: content hash + chunk span (survives renames)")
    rel_path: str = Field(description="path relative to the index's media root")
    media_type: str
    start_s: float | None
    end_s: float | None
    spans: list[tuple[float | None, float | None]] = Field(
        description="spans of the file among the hits (group_by)"
    )
    distance: float = Field(description="Euclidean distance to the query embedding (the ranking)")
    cosine: float
    kept: bool = Field(
        description="kept by the ranking method (PAR: cosine > delta; Euclidean: every hit)"
    )
    kept_by_par: bool = Field(deprecated="use kept", description="deprecated alias of kept")

    @classmethod
    def from_hit(cls, hit) -> SearchHit:  # noqa: ANN001 - a retrieval Hit
        d = hit.as_dict()
        d.pop("path")
        return cls(**d)


class SearchResponse(BaseModel):
    query: str = Field(description="the uploaded file's name, or the path searched by")
    k: int
    delta: float = Field(description="PAR's delta used (the model's own unless given)")
    ranking: str = Field(description="the ranking method that set kept")
    group_by: str | None
    generation: str = Field(description="index generation that answered")
    hits: list[SearchHit]


class Stats(BaseModel):
    items: int
    dim: int
    generation: str
    model: str | None
    backend: str | None
    par_delta: float
    clip_spec: dict
    in_flight: int
    capacity: int


class Health(BaseModel):
    status: str
    generation: str


class ErrorBody(BaseModel):
    error: str
