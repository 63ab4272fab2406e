"""What every entry point shares: config checks, object construction, error reporting."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from media_retrieval.errors import ConfigError, MediaRetrievalError

log = logging.getLogger(__name__)


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


def validate_config(cfg: DictConfig) -> None:
    """Fail at start-up, before any data is read, on values that cannot work."""
    _check_types(cfg)
    _check_choices(cfg)
    _check_trainer(cfg)
    _check_wandb(cfg)
    model = cfg.get("model")
    if model is not None and "backbone" in model and not str(model.get("_target_", "")).endswith("CNNLSTM"):
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


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets our user-facing errors through unwrapped
    (Hydra wraps them in InstantiationException with the target's full traceback text)."""
    try:
        return instantiate(node, **kwargs)
    except Exception as exc:
        err = _user_error(exc)
        if err is not None and err is not exc:
            raise err from None
        raise


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]


def flat_hparams(cfg: DictConfig, locked: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The resolved config as dotted keys (``model.temporal.cell``), the form W&B sweeps use.

    Keys in ``locked`` (set by a W&B sweep for this run) are left out: the sweep already
    recorded them, and re-logging could only repeat or silently overwrite the sweep's value
    (Lightning's WandbLogger updates with ``allow_val_change=True``)."""
    hp = OmegaConf.to_container(cfg, resolve=True)
    hp.pop("hydra", None)
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", hp)
    return {k: v for k, v in out.items() if k not in locked and not any(k.startswith(f"{lk}.") for lk in locked)}


def _sweep_locked_keys(logger: Any) -> set[str]:
    """Config keys a W&B sweep set for this run (empty outside sweeps)."""
    import os

    if not os.environ.get("WANDB_SWEEP_ID") or type(logger).__name__ != "WandbLogger":
        return set()
    try:
        return set(logger.experiment.config.keys())
    except Exception:  # disabled/offline run objects may lack a config
        return set()


def log_hyperparameters(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Send the resolved config to every logger (what W&B shows as the run's config)."""
    for lg in trainer.loggers:
        lg.log_hyperparams(flat_hparams(cfg, _sweep_locked_keys(lg)))
        if type(lg).__name__ == "WandbLogger" and cfg.get("optimized_metric"):
            # the run's summary holds the best epoch, not the last: what sweeps compare
            with contextlib.suppress(Exception):  # disabled runs may not support it
                lg.experiment.define_metric(cfg.optimized_metric, summary="max")


def print_results(results_dir: Path, k: int, delta: float, title: str | None = None) -> list[dict]:
    from media_retrieval.reporting.tables import print_table

    path = results_dir / "results.json"
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    rows = [{kk: (float("nan") if v is None and kk != "delta" else v) for kk, v in r.items()} for r in rows]
    print_table(rows, k, delta, title)
    print(f"results: {path} and {results_dir / 'results.md'}")
    return rows


def _oom_error(exc: BaseException) -> MediaRetrievalError | None:
    """Out of memory (GPU or host) as a user error that says which knob to turn."""
    import torch

    text = str(exc)
    if isinstance(exc, torch.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)):
        return MediaRetrievalError(
            f"out of memory ({text.splitlines()[0][:160]}): use a smaller batch: data.batch_size / "
            "data.eval_batch_size for training and evaluation, batch_size for src/index.py "
            "(data.feature_batch_size when building the feature cache)")
    return None


def _user_error(exc: BaseException) -> MediaRetrievalError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MediaRetrievalError):
            return exc
        oom = _oom_error(exc)
        if oom is not None:
            return oom
        if type(exc).__name__ == "MisconfigurationException":  # Lightning's word for a setting that cannot work
            return ConfigError(" ".join(str(exc).split())[:400])
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_cli(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an entry point; a user-fixable error ends with one clear line and exit code 2.

    In a Hydra multirun (sweeps, ablations) the error is written to the job's ``error.txt``
    and the sweep goes on to its next job: one impossible combination must not stop the study."""
    try:
        return fn(cfg)
    except Exception as exc:
        err = _user_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        if _in_multirun():
            out = Path(cfg.paths.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "error.txt").write_text(f"{err}\n")
            (out / "failure.json").write_text(json.dumps({"kind": type(err).__name__, "message": str(err)}))
            log.error("job failed, sweep continues: %s", err)
            return None
        sys.exit(getattr(err, "exit_code", 2))
