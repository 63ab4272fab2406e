"""Distances, proximal affinity re-ranking, metrics and the evaluator."""

from media_retrieval.retrieval import milvus  # noqa: F401 - registers index.backend=milvus (pymilvus loads on use)
from media_retrieval.retrieval.evaluate import EmbeddingSet, rank, score_rows
from media_retrieval.retrieval.par import par_keep, par_rerank

__all__ = ["EmbeddingSet", "par_keep", "par_rerank", "rank", "score_rows"]
