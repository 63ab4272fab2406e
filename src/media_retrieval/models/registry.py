"""The model classes an index or checkpoint may name, and building one from stored hparams.

An index folder may come from someone else, so its ``model.json`` is data: the class it names
is looked up in :data:`MODELS` (never an import of whatever string is there), and its
hyper-parameters must be arguments that class accepts. Anything else is refused before a single
constructor runs. :data:`MODELS` is filled by :func:`register_model`: the package's model
modules, and the user's own modules named by ``plugins: [...]`` (``docs/extending.md``).
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from pathlib import Path
from typing import Any

import torch

from media_retrieval.errors import ConfigError, DataError
from media_retrieval.models.backbones import create_backbone
from media_retrieval.models.record import qualified_name, read_record, record_of
from media_retrieval.models.temporal import TemporalHead
from media_retrieval.utils.limits import limits

#: qualified class name (as written into checkpoints and model.json) -> the class
MODELS: dict[str, type] = {}


def register_model(cls: type) -> type:
    """Class decorator: checkpoints and indexes may name this model class (a ClipEmbedder)."""
    MODELS[qualified_name(cls)] = cls
    return cls


def _package_models() -> None:
    """Import this package's model modules (our own files), so their classes are registered;
    a name read from a file is then only looked up."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{info.name}")


def model_class(name: str) -> type:
    """The class for a stored name: a registered model, else refused (the name is never
    imported)."""
    if isinstance(name, str) and name not in MODELS:
        _package_models()
    if not isinstance(name, str) or name not in MODELS:
        raise DataError(
            f"model class {str(name)[:80]!r} is not a registered model "
            f"({', '.join(sorted(MODELS))}); "
            "a model of your own is registered by its module: plugins=[<that module>]"
        )
    return MODELS[name]


def _check_keys(where: str, given: dict, allowed: set[str]) -> None:
    if not isinstance(given, dict):
        raise DataError(f"{where} must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise DataError(f"{where} has argument(s) {unknown[:5]} that the model does not take")


def _params(fn: Any, drop: tuple[str, ...] = ("self",)) -> set[str]:
    return {p for p in inspect.signature(fn).parameters if p not in drop}


def accepted_arguments(cls: type) -> set[str]:
    """The constructor's named arguments, plus those its ``**common`` passes on to the shared
    base (walked up the MRO while each ``__init__`` forwards keywords)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names |= {
            p.name
            for p in params
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def takes_argument(cls: type, name: str) -> bool:
    return name in accepted_arguments(cls)


def check_hparams(cls: type, hparams: dict) -> None:
    """Every key (and each nested block we know) is an argument the constructor takes."""
    _check_keys("model.json hparams", hparams, accepted_arguments(cls))
    if "backbone" in hparams:
        _check_keys("model.json hparams.backbone", hparams["backbone"], _params(create_backbone))
    if "temporal" in hparams:
        _check_keys(
            "model.json hparams.temporal",
            hparams["temporal"],
            _params(TemporalHead.__init__, ("self", "in_dim")),
        )


def check_shapes(cls: type, hparams: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """The model these hyper-parameters make has exactly the stored tensors, and no more values
    than the limit: decided on PyTorch's ``meta`` device, where nothing is allocated. A stored
    ``hidden=12000`` with small weights (4 GB of LSTM before the shapes could disagree) is
    refused here; stored weights that are that large are refused by their file's size."""
    try:
        with torch.device("meta"):
            model = cls(**hparams)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any constructor error: the stored spec is unusable
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"the stored model cannot be rebuilt ({first})") from exc
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    total = sum(math.prod(v) for v in expected.values())
    cap = limits().max_model_values
    if total > cap:
        raise DataError(
            f"the stored hyper-parameters make a model of {total:,} values, over the limit of "
            f"{cap:,} "
            "(MEDIA_RETRIEVAL_MAX_MODEL_VALUES raises it)"
        )
    if expected != shapes:
        wrong = sorted(k for k in set(expected) | set(shapes) if expected.get(k) != shapes.get(k))
        raise DataError(
            f"the stored weights do not fit the stored hyper-parameters ({len(wrong)} tensors "
            "differ, "
            f"e.g. {wrong[0]!r}: {shapes.get(wrong[0])} stored, {expected.get(wrong[0])} expected)"
        )


def without_pretrained(hparams: dict) -> dict:
    """These hyper-parameters with pretrained weights not fetched (a frame encoder's
    ``backbone.weights``, a video encoder's ``weights``): the stored state dict holds them."""
    hparams = dict(hparams)
    if isinstance(hparams.get("backbone"), dict):
        hparams["backbone"] = {**hparams["backbone"], "weights": "none"}
    if isinstance(hparams.get("weights"), str):
        hparams["weights"] = "none"
    return hparams


def build_from_spec(
    class_name: str, hparams: dict, state_dict: dict[str, torch.Tensor]
) -> torch.nn.Module:
    """Rebuild a stored model: allow-listed class, checked arguments, pretrained weights not
    fetched (they come from ``state_dict``), every tensor present with its shape (checked before
    the model is allocated: :func:`check_shapes`)."""
    cls = model_class(class_name)
    check_hparams(cls, hparams)
    hparams = without_pretrained({**hparams, "compile": False})  # compiling is the reader's choice
    check_shapes(cls, hparams, {k: tuple(v.shape) for k, v in state_dict.items()})
    try:
        model = cls(**hparams)
        model.load_state_dict(state_dict, strict=True)
    except DataError:
        raise
    except Exception as exc:  # any constructor or shape error: the stored spec is unusable
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"the stored model cannot be rebuilt ({first})") from exc
    return model.eval()


def model_record(model: torch.nn.Module, ckpt_path: str | None = None) -> dict:
    """What an index stores about its model (``model.json``): its :class:`ModelRecord`."""
    return record_of(model, ckpt_path).to_dict()


def load_model(
    ckpt_path: str | Path, cls: type | None = None, compile: bool = False
) -> torch.nn.Module:  # noqa: A002
    """A trained model from its checkpoint alone: the class the checkpoint records (one of
    ours), its hyper-parameters, weights and clip spec; nothing in it is executed
    (``weights_only``). ``cls`` is needed only for checkpoints written before the class was
    recorded (format 1). ``compile`` is the loader's choice, not the checkpoint's: a model
    trained with ``model.compile=true`` on a GPU must not start compiling on a laptop that
    only wants to search."""
    from media_retrieval.utils.checkpoint import load_model as load_weights_only  # noqa: PLC0415 - utils.checkpoint (and what it loads) stays unloaded until used

    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: file not found")
    try:
        # mmap: only the small record and the shapes are read here (the weights are read once,
        # below)
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} cannot be loaded safely: {str(exc).splitlines()[0]}"
        ) from exc
    try:
        record = read_record(ckpt.get("media_retrieval") or {}, ckpt.get("hyper_parameters"))
        if record.cls:
            cls = model_class(record.cls)
    except DataError as exc:
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: {exc}") from exc
    if cls is None:
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} predates recorded model classes: name its class "
            "(model=<its config> on the command line, or load_model(path, cls=...))"
        )
    hparams = ckpt.get("hyper_parameters")
    state = ckpt.get("state_dict")
    if isinstance(hparams, dict) and isinstance(state, dict):
        stored = without_pretrained({k: v for k, v in hparams.items() if takes_argument(cls, k)})
        try:  # the same allocation guard as for an index's model: shapes on the meta device first
            check_shapes(
                cls, {**stored, "compile": False}, {k: tuple(v.shape) for k, v in state.items()}
            )
        except DataError as exc:
            raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: {exc}") from exc
    del ckpt
    return load_weights_only(cls, path, compile=compile)


def model_from_config(model_cfg: Any, ckpt_path: str | Path | None = None) -> torch.nn.Module:
    """The checkpoint's model (the class it records wins over ``model_cfg``), or, without a
    checkpoint, the configured model when it has nothing to train (a frozen backbone without
    recurrence embeds as it is)."""
    from hydra.utils import get_class  # noqa: PLC0415 - hydra stays unloaded until used

    from media_retrieval.utils.instantiate import build  # noqa: PLC0415 - utils.instantiate (and what it loads) stays unloaded until used

    if ckpt_path:
        return load_model(
            ckpt_path,
            cls=get_class(model_cfg._target_),
            compile=bool(model_cfg.get("compile", False)),
        )
    model = build(model_cfg)
    if model.has_trainable_embedding:
        raise ConfigError(
            "ckpt_path is required: this model's embedding must be trained first (without a "
            "checkpoint use model=i3d, or model.temporal.cell=none for ImageNet frame features; "
            "docs/search.md, 'Images and video models', says which suits a library)"
        )
    return model
