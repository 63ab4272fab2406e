"""Building objects from config nodes, with our one-line errors kept one line."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from media_retrieval.errors import user_error


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets our user-facing errors through unwrapped
    (Hydra wraps them in InstantiationException with the target's full traceback text)."""
    try:
        return instantiate(node, **kwargs)
    except Exception as exc:
        err = user_error(exc)
        if err is not None and err is not exc:
            raise err from None
        raise


def build_callbacks(cfg: DictConfig) -> list:
    """The ``callbacks:`` group's entries that name a target (``none`` entries switch one off)."""
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]
