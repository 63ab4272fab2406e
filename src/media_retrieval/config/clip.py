"""The clip spec: how a media file becomes model input, as one typed value and one config node.

:class:`ClipSpec` is at once the schema of the ``clip`` config node (``data.clip`` in training
and evaluation, whose defaults live in ``configs/clip/default.yaml`` alone; the top-level
``clip`` of an index build, ``configs/clip/model.yaml``, where null means the model's own) and
the value that travels with the model: saved in every checkpoint and index, read back by
:meth:`ClipSpec.from_dict`. Its ``__post_init__`` is the one place a clip's fields are
validated; :func:`check_clip_node` runs it on a composed config, before torch is imported.

Only omegaconf is imported here (never torch): this runs before the heavy imports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from media_retrieval.errors import ConfigError, DataError
from media_retrieval.utils.limits import limits

log = logging.getLogger(__name__)

RESIZE_MODES = ("short_side_crop", "stretch")
SAMPLINGS = ("index", "time")
DECODERS = ("seek", "decode_all")

#: normalisation name -> (mean, std) per RGB channel, applied to pixels scaled to [0, 1]
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1]
}

#: the clip fields that name one of a few values, and those values
CHOICES: dict[str, tuple[str, ...]] = {
    "resize": RESIZE_MODES,
    "sampling": SAMPLINGS,
    "decoder": DECODERS,
    "normalize": tuple(NORMALIZATIONS),
}


@dataclass(frozen=True)
class ClipSpec:
    """Everything between a file and the model's input (its :meth:`key` is part of the index
    fingerprint and the feature-cache key). The field defaults here are those of a spec read
    from a file that omits a field; a composed config takes its own from
    ``configs/clip/default.yaml``."""

    frames: int = 16
    image_size: int = 224
    resize: str = "short_side_crop"
    in_chans: int = 3
    sampling: str = "index"
    chunk_s: float | None = 10.0
    decoder: str = "seek"  # not in the key: both decoders give the same pixels (tested)
    #: how pixels are scaled for the model: ``imagenet`` (mean/std of ImageNet, the 2D frame
    #: encoders) or ``inception`` ([-1, 1], I3D). The model decides it (``input_normalize``)
    normalize: str = "imagenet"

    def __post_init__(self) -> None:
        def number(v: object, lo: float, hi: float) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

        chunk = self.chunk_s
        checks = [
            (number(self.frames, 1, 1024), "frames in 1..1024"),
            (number(self.image_size, 8, 4096), "image_size in 8..4096"),
            (self.in_chans in (1, 3), "in_chans 1 or 3"),
            (
                chunk is None or (isinstance(chunk, (int, float)) and chunk > 0),
                "chunk_s > 0 or null",
            ),
            *((getattr(self, k) in valid, f"{k} in {valid}") for k, valid in CHOICES.items()),
        ]
        bad = [want for ok, want in checks if not ok]
        if bad:
            raise DataError(f"clip spec {self.key()} is invalid: needs {'; '.join(bad)}")
        # in range field by field, yet 1024 frames x 4096 px is 17 G values
        cap = limits().max_clip_pixels
        if self.frames * self.image_size**2 > cap:
            raise DataError(
                f"clip spec {self.key()}: {self.frames} frames of {self.image_size} px are over "
                f"the limit of {cap} pixels per clip (MEDIA_RETRIEVAL_MAX_CLIP_PIXELS raises it)"
            )

    def key(self) -> dict:
        """The fields that decide the pixels (the decoder does not). ImageNet normalisation, the
        default, is left out, so a stored spec without ``normalize`` means ImageNet and every
        index and feature cache made before the field existed keeps its key."""
        d = asdict(self)
        d.pop("decoder")
        if d["normalize"] == "imagenet":
            d.pop("normalize")
        return d

    @classmethod
    def from_dict(cls, spec: object, **overrides: Any) -> ClipSpec:
        """From a stored spec (a checkpoint or an index manifest): known keys of the right types
        only; anything else is refused with one line. An override of None keeps the stored value."""
        names = {f.name for f in fields(cls)}
        if (
            not isinstance(spec, dict)
            or not set(spec) <= names
            or not {"frames", "image_size"} <= set(spec)
        ):
            raise DataError(
                f"the stored clip spec {str(spec)[:120]} is not one (keys {sorted(names)})"
            )
        typed = {"frames": int, "image_size": int, "in_chans": int, "resize": str,
                 "sampling": str, "decoder": str, "normalize": str}  # fmt: skip
        for k, t in typed.items():
            if k in spec and (not isinstance(spec[k], t) or isinstance(spec[k], bool)):
                raise DataError(f"the stored clip spec has {k}={spec[k]!r}")
        return cls(**{**spec, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> ClipSpec:
        """From a composed ``clip`` node (``data.clip``), whose every field is set."""
        return cls(**{f.name: node[f.name] for f in fields(cls) if f.name in node})

    def with_overrides(self, warn: bool = True, **overrides: Any) -> ClipSpec:
        """This spec with some fields replaced (None = keep). With ``warn``, a change to what
        decides the pixels is logged: the model was trained on other clips. ``chunk_s`` (how
        long a library's videos are cut) is never warned about."""
        new = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        old = self.key()
        changed = {
            k: (old.get(k), v) for k, v in new.key().items() if old.get(k) != v and k != "chunk_s"
        }
        if changed and warn:
            log.warning(
                "clip spec overridden (the model was trained with other clips): %s",
                ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()),
            )
        return new

    def with_node(self, node: Mapping[str, Any], warn: bool = True) -> ClipSpec:
        """This spec with an index build's ``clip`` node applied (``configs/clip/model.yaml``:
        null = the model's own); ``chunk_s`` and ``decoder`` are the library's choices."""
        return self.with_overrides(warn=warn, **{f.name: node.get(f.name) for f in fields(self)})


def check_clip_node(node: Mapping[str, Any] | None, where: str) -> None:
    """A composed ``clip`` node holds a valid spec: the values it sets are checked by
    :class:`ClipSpec` itself (nulls, where allowed, mean "the model's own"); a bad one is one
    ``ConfigError`` naming the key."""
    if node is None:
        return
    given = {f.name: node.get(f.name) for f in fields(ClipSpec) if node.get(f.name) is not None}
    for name, value in given.items():
        if name in CHOICES and value not in CHOICES[name]:  # worded as every other choice key
            raise ConfigError(f"{where}.{name}={value!r}; valid: {', '.join(CHOICES[name])}")
        try:
            replace(ClipSpec(), **{name: value})
        except (DataError, TypeError) as exc:
            msg = str(exc).split("needs ")[-1]
            raise ConfigError(f"{where}.{name}={value!r}: needs {msg}") from exc
    try:
        replace(ClipSpec(), **given)
    except DataError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
