"""Checks of a composed config that run at start-up, before any data is read: a value that
cannot work ends with one line (``error: ...``, exit 2) instead of a traceback minutes in.
Each list of valid values lives beside the code that uses it; this module only asks."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from media_retrieval.errors import ConfigError

# (config key, type, minimum): values every entry point reads; None = optional
_TYPED = [("data.batch_size", int, 1), ("data.eval_batch_size", int, 1), ("data.frames", int, 1),
          ("data.image_size", int, 8), ("data.num_workers", int, 0), ("trainer.max_epochs", int, -1),
          ("model.lr", float, 0.0), ("model.dropout", float, 0.0), ("seed", int, None),
          ("batch_size", int, 1), ("k", int, 1), ("preprocess.frames", int, 1), ("preprocess.image_size", int, 8),
          ("model.temporal.hidden", int, 1), ("model.temporal.num_layers", int, 1),
          ("model.temporal.embed_dim", int, 1), ("model.embed_dim", int, 1), ("num_workers", int, 0),
          ("retrieval.table_k", int, 1), ("data.chunk_s", float, 0.001), ("preprocess.chunk_s", float, 0.001),
          ("index.lock_wait_s", float, 0.0)]


def _choices() -> list[tuple[str, tuple]]:
    """(config key, valid values) checked at start-up; each tuple lives beside the code using it."""
    from media_retrieval.data.transforms import RESIZE_MODES
    from media_retrieval.data.video import DECODERS, SAMPLINGS
    from media_retrieval.models.temporal import CELLS, READOUTS
    from media_retrieval.retrieval.backends import BACKENDS

    return [("data.resize", RESIZE_MODES), ("preprocess.resize", RESIZE_MODES), ("data.sampling", SAMPLINGS),
            ("preprocess.sampling", SAMPLINGS), ("data.decoder", DECODERS), ("preprocess.decoder", DECODERS),
            ("decoder", DECODERS), ("model.temporal.cell", CELLS), ("model.temporal.readout", READOUTS),
            ("index.backend", BACKENDS)]


def _check_choices(cfg: DictConfig) -> None:
    for key, valid in _choices():
        v = OmegaConf.select(cfg, key, default=None)
        if v is not None and v not in valid:
            raise ConfigError(f"{key}={v!r}; valid: {', '.join(valid)}")


def _check_trainer(cfg: DictConfig) -> None:
    """What Lightning would reject only after the data is prepared (minutes in)."""
    t = cfg.get("trainer")
    if t is None:
        return
    devices = t.get("devices")
    empty = OmegaConf.is_list(devices) and len(devices) == 0
    zero = isinstance(devices, int) and not isinstance(devices, bool) and devices < 1 and devices != -1
    if isinstance(devices, bool) or zero or empty or (isinstance(devices, str) and devices.strip() in ("0", "")):
        raise ConfigError(f"trainer.devices must be >= 1, -1 (all), 'auto' or a list of device ids, got {devices!r}")
    if str(t.get("accelerator")) in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={t.get('accelerator')} (trainer=gpu/ddp) needs a CUDA GPU and "
                              "none is visible: use trainer=default (CPU here) or trainer=ddp_sim")


def _check_wandb(cfg: DictConfig) -> None:
    """An online W&B logger without credentials fails deep inside ``wandb.init``; say it now."""
    import os

    w = OmegaConf.select(cfg, "logger.wandb", default=None)
    if not w or "_target_" not in w or w.get("offline") or \
            os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or \
            os.environ.get("WANDB_API_KEY"):
        return
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        if netrc.netrc().authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise ConfigError("logger=wandb needs a W&B login: run `wandb login` (or set WANDB_API_KEY), or log without an "
                      "account: logger.wandb.offline=true (or WANDB_MODE=offline)")


def _check_types(cfg: DictConfig) -> None:
    for key, typ, low in _TYPED:
        v = OmegaConf.select(cfg, key, default=None)
        if v is None:
            continue
        ok = isinstance(v, int) and not isinstance(v, bool) if typ is int else \
            isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok:
            raise ConfigError(f"{key} must be {'an integer' if typ is int else 'a number'}, got {v!r}")
        if low is not None and v < low:
            raise ConfigError(f"{key} must be >= {low}, got {v}")


def _takes(target: str | None, argument: str) -> bool:
    """Does the model class take this argument? (asked of the class, not guessed from its name)"""
    if not target:
        return True
    from hydra.utils import get_class

    from media_retrieval.models.registry import takes_argument

    return takes_argument(get_class(target), argument)


def validate_config(cfg: DictConfig) -> None:
    """Fail at start-up, before any data is read, on values that cannot work."""
    _check_types(cfg)
    _check_choices(cfg)
    _check_trainer(cfg)
    _check_wandb(cfg)
    model = cfg.get("model")
    if model is not None and "backbone" in model and not _takes(model.get("_target_"), "backbone"):
        raise ConfigError(f"model={model.get('name')} has no 2D backbone: model.backbone.* applies to cnn_lstm "
                          "models (cnn_lstm, cnn_lstm_e2e)")
    r = cfg.get("retrieval")
    if r is not None:
        ks = list(r.k)
        if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
            raise ConfigError(f"retrieval.k must be a list of integers >= 1, got {ks}")
        for d in [r.par.delta, *r.par.deltas]:
            if not isinstance(d, (int, float)) or not -1.0 <= float(d) <= 1.0:
                raise ConfigError(f"retrieval.par.delta(s) must be numbers in [-1, 1] (cosine), got {d}")
        if r.get("table_k") is not None and r.table_k not in ks:
            raise ConfigError(f"retrieval.table_k={r.table_k} is not one of retrieval.k={ks}: the table would be "
                              f"empty; add it, e.g. retrieval.k=[{','.join(map(str, sorted({*ks, r.table_k})))}]")
