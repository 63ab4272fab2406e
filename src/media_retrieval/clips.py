"""``media_retrieval.clips``: the public name of :mod:`media_retrieval.data.clips` (ClipSpec,
load_clip), which lives with the data layer it drives."""

from media_retrieval.data.clips import ClipSpec, load_clip

__all__ = ["ClipSpec", "load_clip"]
