"""Upper bounds on every size that a file handed to us can ask for.

A checkpoint, an index folder, a media file or an upload may come from someone else. Each of
them names sizes (a model's widths, a clip's frames and pixels, a video's claimed duration, a
file's length) that are in range for the type yet large enough to exhaust memory, disk or time.
Each such size is checked against one of these limits *before* anything is allocated for it.

The limits belong to the user, never to the file: defaults here, overridden by the environment
(``MEDIA_RETRIEVAL_<NAME>``, e.g. ``MEDIA_RETRIEVAL_MAX_FRAME_PIXELS=100000000``) or from Python
with :func:`set_limits`. ``docs/reliability.md`` lists each with its default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from media_retrieval.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    #: pixels of one decoded frame or image (8K UHD is 33 Mpx): refused before it is decoded
    max_frame_pixels: int = 40_000_000
    #: frames x height x width of one model input (16 x 224 x 224 is 0.8 M)
    max_clip_pixels: int = 25_000_000
    #: a video's duration in seconds, whether claimed by its header or measured from its packets
    max_video_s: float = 24 * 3600.0
    #: time segments (chunks) one file may become
    max_segments_per_file: int = 10_000
    #: values in a model's weights (C3D, the largest model here, has 78 M)
    max_model_values: int = 500_000_000
    #: rows of an index (its vectors are read into memory on open)
    max_index_rows: int = 200_000_000
    #: width of an embedding
    max_embedding_dim: int = 65_536
    #: bytes of any other file of an index generation (SQLite, search structures, weights)
    max_index_file_bytes: int = 16 << 30
    #: concurrent HTTP connections of the service (further ones get 503 and are closed)
    max_connections: int = 512
    #: seconds a client may take to send a complete request head
    header_timeout_s: float = 10.0

    @classmethod
    def from_env(cls) -> Limits:
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"MEDIA_RETRIEVAL_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _parse(f.name, raw, float if f.type in ("float", float) else int)
        return cls(**values)


def _parse(name: str, raw: object, kind: type) -> float | int:
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"limit {name}={raw!r} must be a positive {kind.__name__}") from None
    if isinstance(raw, bool) or not value > 0:
        raise ConfigError(f"limit {name}={raw!r} must be a positive {kind.__name__}")
    return value


_current: Limits | None = None


def limits() -> Limits:
    """The limits in force (the environment is read once, at first use)."""
    global _current
    if _current is None:
        _current = Limits.from_env()
    return _current


def set_limits(**changes: float | int) -> Limits:
    """Change limits for this process (e.g. a service that indexes 16K stills); returns the new
    set."""
    global _current
    names = {f.name: f for f in fields(Limits)}
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise ConfigError(f"unknown limit(s) {unknown}; valid: {sorted(names)}")
    typed = {
        k: _parse(k, v, float if names[k].type in ("float", float) else int)
        for k, v in changes.items()
    }
    _current = replace(limits(), **typed)
    return _current


def reset_limits() -> None:
    """Back to the defaults and the environment (tests)."""
    global _current
    _current = None
