"""The machine's defaults for a run: decoding processes, the device an accelerator setting
embeds on, clips per forward pass. torch is imported only when a device must be asked."""

from __future__ import annotations

import os


def decode_workers() -> int:
    """Default decoding processes (``num_workers``): one per core but one (the main process
    runs the model), at most 16. On 2 cores that is 1; a 16-core GPU machine gets 15, which
    took indexing from 55 s to 7.9 s there (issue 16)."""
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def accelerator_device(accelerator: str = "auto") -> str:
    """The device type a ``trainer.accelerator`` setting embeds on: ``cuda`` or ``cpu``."""
    import torch  # noqa: PLC0415 - torch stays unloaded until used

    accelerator = str(accelerator)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "cuda" if on_gpu else "cpu"


def clips_per_batch(accelerator: str = "auto") -> int:
    """Default clips per forward pass of an index build (``batch_size``): 32 on a GPU; 1 on a
    CPU, where a 16-frame batch runs Lite0 at 110 frames/s and a 128-frame one at 60 (the
    activations of a large batch fall out of cache; benchmarks/README.md, issue 16)."""
    return 32 if accelerator_device(accelerator) == "cuda" else 1
