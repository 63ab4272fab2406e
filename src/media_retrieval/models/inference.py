"""Embedding media files one by one with a model: videos and images in one space.

Clips are made by :func:`media_retrieval.clips.load_clip` with the model's clip spec (the one
it was trained with), as index builds and queries make them: an image is a still clip, its
frame repeated ``frames`` times. ``frame_index`` embeds one sampled frame of a video as such a
still (how a frame grabbed from a clip queries the collection). ``mode="backbone"`` embeds with
the 2D backbone's pooled features alone (the paper's image-retrieval path); those live in the
backbone's space and are comparable with videos only for the no-recurrence model
(``model.temporal.cell=none``, whose video embedding is the mean frame feature).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from media_retrieval.data.clips import ClipSpec, load_clip
from media_retrieval.errors import ConfigError


@torch.inference_mode()
def embed_file(
    model,
    path: str | Path,
    frames: int | None = None,
    transform=None,
    mode: str = "clip",
    frame_index: int | None = None,
    spec: ClipSpec | None = None,
) -> torch.Tensor:
    """(D,) embedding of one video or image file (``spec``: default the model's own;
    ``frames``/``transform`` override its frame count and transform)."""
    if mode not in ("clip", "backbone"):
        raise ConfigError(f"mode={mode!r}; valid: clip, backbone")
    spec = spec or model.input_spec
    if frames:
        spec = replace(spec, frames=int(frames))
    clip = load_clip(path, spec, transform=transform)
    if frame_index is not None:
        clip = clip[frame_index : frame_index + 1].expand_as(clip)
    x = clip.unsqueeze(0).to(model.device)
    model.eval()
    if mode == "backbone":
        if not hasattr(model, "frame_features"):
            raise ConfigError(f"{type(model).__name__} has no 2D backbone: use mode=clip")
        return model.frame_features(x)[0].mean(0)
    return model.embed({"clip": x})[0]


#: inference precisions: ``fp32``, or ``bf16`` autocast (tensor cores on GPU; changes the
#: embeddings slightly, so it is part of an index's fingerprint)
PRECISIONS = ("fp32", "bf16")


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto``: bf16 on CUDA (2x the fp32 rate of the frame encoder there), fp32 elsewhere:
    bf16 changes the embeddings, so existing CPU indexes keep their fingerprints (on CPUs with
    bf16 units ``bf16`` is faster too, 2.3x here; an explicit opt-in)."""
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}; valid: auto, {', '.join(PRECISIONS)}")
    return precision


def autocast(device: str | torch.device, precision: str):
    """The numeric context of ``precision`` on ``device``: bf16 autocast, or IEEE fp32.

    fp32 on CUDA turns cuDNN's TF32 convolutions off (PyTorch's default leaves them on, and
    matmuls already run in full fp32): with TF32 the same clips embedded on an H100 lay up to
    9.5e-3 from the CPU's embeddings and 5.8e-3 between a batch and single clips, without it
    3.3e-6 (benchmarks/README.md), so a query embedded on a CPU, or alone, finds exactly what
    an fp32 index holds. fp32 is the opt-in for that agreement; ``auto`` on CUDA is bf16 anyway."""
    kind = torch.device(device).type
    if kind == "cuda" and precision == "fp32":
        cudnn = torch.backends.cudnn
        return cudnn.flags(
            enabled=cudnn.enabled,
            benchmark=cudnn.benchmark,
            deterministic=cudnn.deterministic,
            allow_tf32=False,
        )
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


def inference_layout(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, and channels_last_3d weights for 3D convolutions (2D backbones set
    channels_last themselves): the layout every embedding path uses, builds and queries alike."""
    model.eval()
    for m in model.modules():  # 3D convolutions only: a fused model's 2D backbone keeps its own
        if isinstance(m, torch.nn.Conv3d):
            m.to(memory_format=torch.channels_last_3d)
    return model


def fast_inference(model, precision: str = "auto", compile_model: bool = False):
    """``model.embed`` on its device's fast path, as a function of a batch: inference mode,
    channels_last frames (2D backbones do it themselves; 3D convolutions get channels_last_3d
    here, so C3D and the 3D baselines are compared equally optimised), bf16 autocast per
    :func:`resolve_precision`, and optionally ``torch.compile`` (compiles on first call)."""
    inference_layout(model)
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    embed = torch.compile(model.embed) if compile_model else model.embed

    def run(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, precision):
            return embed(batch).float()

    run.precision = precision
    return run
