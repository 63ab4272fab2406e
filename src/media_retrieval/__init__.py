"""Content-based visual media retrieval: find the videos and images whose content is alike.

The Python API (no Hydra needed)::

    from media_retrieval import MediaIndex, load_model

    model = load_model("logs/train/runs/<run>/checkpoints/<best>.ckpt")
    vector = model.embed_file("clip.mp4")
    index = MediaIndex.build("~/Videos", "~/video-index", model=model)
    hits = index.search("query.mp4", k=10)

Names are imported on first use, so ``import media_retrieval`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ClipSpec", "Hit", "IndexOptions", "MediaIndex", "load_clip", "load_model"]

_WHERE = {
    "ClipSpec": "media_retrieval.clips",
    "load_clip": "media_retrieval.clips",
    "MediaIndex": "media_retrieval.retrieval.media_index",
    "Hit": "media_retrieval.retrieval.media_index",
    "IndexOptions": "media_retrieval.retrieval.indexer",
    "load_model": "media_retrieval.models.registry",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'media_retrieval' has no attribute {name!r}")
