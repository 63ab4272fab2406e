"""The model record: what travels with a model in every checkpoint
(``checkpoint["media_retrieval"]``) and every index generation (``model.json``), written by
:func:`record_of` and read by :func:`read_record` alone.

It holds what a checkpoint or index must say for its model to be rebuilt and used exactly as
trained: the class (a registry name, looked up and never imported) and its arguments, the clip
spec (how a file becomes its input), the δ chosen on validation (PAR's threshold), the PCA
whitening and the hashes of the encoders' weights (so two records with the same class and
arguments but other pretrained weights differ visibly). Everything read back is data: checked
field by field, one line on what is wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from media_retrieval.config.retrieval import DeltaChoice, resolve_delta, stored_delta
from media_retrieval.data.clips import ClipSpec
from media_retrieval.errors import DataError

#: 1: class, clip spec and δ; 2: also the arguments, whitening and encoder weight hashes. A
#: record without ``format`` (checkpoints before classes were recorded) reads as format 0.
RECORD_FORMAT = 2


@dataclass(frozen=True)
class ModelRecord:
    """One model's record (see the module's docstring)."""

    cls: str
    hparams: dict[str, Any] = field(default_factory=dict)
    clip_spec: ClipSpec | None = None
    #: δ chosen on validation (``retrieval.par.delta=auto``), None where none was chosen
    delta: float | None = None
    #: ``{"dim": D, "fitted": bool}`` of the PCA whitening fitted on training embeddings
    whitening: dict[str, Any] | None = None
    #: SHA-256 (first 16 hex) of each frozen or pretrained encoder's weights, by its role
    encoder_sha256: dict[str, str] = field(default_factory=dict)
    ckpt_path: str | None = None
    format: int = RECORD_FORMAT

    def delta_choice(self, requested: float | str | None = None) -> DeltaChoice:
        """The δ to use: the user's number, else (``auto`` or nothing asked) this record's."""
        return resolve_delta(requested, self.delta)

    def to_dict(self) -> dict[str, Any]:
        """JSON- and ``weights_only``-safe: plain containers. ``class`` and ``par_delta`` keep the
        names format 1 used, so older readers still find them."""
        return {
            "format": self.format,
            "class": self.cls,
            "hparams": self.hparams,
            "clip_spec": asdict(self.clip_spec) if self.clip_spec else None,
            "par_delta": self.delta,
            "whitening": self.whitening,
            "encoder_sha256": dict(self.encoder_sha256),
            "ckpt_path": self.ckpt_path,
        }


def qualified_name(cls: type) -> str:
    """The name a record gives a model class (the registry's key)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def weights_sha256(module: torch.nn.Module) -> str:
    """The hash of a module's tensors (names, dtypes, values) in a fixed order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def record_of(model: torch.nn.Module, ckpt_path: str | Path | None = None) -> ModelRecord:
    """The record of a model (a ClipEmbedder: every registered model is one) as it is now, its δ
    and whitening included."""
    hparams = OmegaConf.to_container(OmegaConf.create(dict(model.hparams)), resolve=True)
    whitening = model.whitening
    return ModelRecord(
        cls=qualified_name(type(model)),
        hparams=hparams,
        clip_spec=model.clip_spec,
        delta=stored_delta(model.par_delta),  # a plain float: checkpoints load weights_only
        whitening=None
        if whitening is None
        else {"dim": int(whitening.dim), "fitted": bool(whitening.fitted)},
        encoder_sha256={role: weights_sha256(m) for role, m in model.pretrained_encoders().items()},
        ckpt_path=str(Path(ckpt_path).resolve()) if ckpt_path else None,
    )


def read_record(data: Any, hparams: Any = None, legacy_delta: Any = None) -> ModelRecord:
    """The one reader of a stored record: a checkpoint's ``media_retrieval`` entry (``hparams``:
    its ``hyper_parameters``, where format 1 kept them) or an index's ``model.json``.
    ``legacy_delta``: where a format-1 index kept δ (its manifest). Raises DataError, one line."""
    if not isinstance(data, Mapping):
        raise DataError(f"the model record is a {type(data).__name__}, not a mapping")
    fmt = data.get("format", 0)
    cls = data.get("class")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 0 <= fmt <= RECORD_FORMAT:
        raise DataError(
            f"the model record's format {str(fmt)[:20]!r} is not one this version reads "
            f"(0..{RECORD_FORMAT}): a newer version of media-retrieval wrote it"
        )
    if cls is not None and not isinstance(cls, str):
        raise DataError("the model record's class is not a name")
    stored = data.get("hparams", hparams)
    if stored is not None and not isinstance(stored, Mapping):
        raise DataError("the model record's hparams are not a mapping")
    spec = data.get("clip_spec")
    if spec is not None and not isinstance(spec, Mapping):
        raise DataError("the model record's clip_spec is not a mapping")
    whitening = data.get("whitening")
    if whitening is not None and not (
        isinstance(whitening, Mapping) and isinstance(whitening.get("dim"), int)
    ):
        raise DataError("the model record's whitening is not {dim, fitted}")
    hashes = data.get("encoder_sha256") or {}
    if not isinstance(hashes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()
    ):
        raise DataError("the model record's encoder_sha256 is not {role: hash}")
    delta = data.get("par_delta") if "par_delta" in data else legacy_delta
    ckpt = data.get("ckpt_path")
    return ModelRecord(
        cls=cls or "",
        hparams=dict(stored or {}),
        clip_spec=ClipSpec.from_dict(dict(spec)) if spec else None,
        delta=stored_delta(delta),
        whitening=dict(whitening) if whitening else None,
        encoder_sha256=dict(hashes),
        ckpt_path=ckpt if isinstance(ckpt, str) else None,
        format=fmt,
    )
