"""Retrieval's schema (``retrieval/*.yaml``) and PAR's δ: the default, the record of
how it was chosen, and the one place ``auto`` is resolved.

Only hydra and omegaconf are imported here (never torch): this runs before the heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from media_retrieval.errors import ConfigError


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
