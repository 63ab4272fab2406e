"""What a model costs, measured on the model a run trained: the paper's Table III columns
(parameters, the size of its weights, seconds to embed one clip). ``src/report.py`` reads them from
each run's ``retrieval/cost.json``, so Table III comes from the same runs as Table IV."""

from __future__ import annotations

import io
import json
import statistics
import time
from pathlib import Path

import torch

from media_retrieval.utils.files import atomic_write_text

#: beside a run's results.json: what its model costs (Table III)
COST_FILE = "cost.json"


def embed_seconds(model: torch.nn.Module, runs: int = 3) -> float:
    """Median CPU seconds to embed one clip of the model's own spec from pixels (decoding
    excluded), batch 1, after one warm-up: what indexing a file costs once it is decoded."""
    spec = model.clip_spec
    clip = torch.randn(1, spec.frames, spec.in_chans, spec.image_size, spec.image_size)
    was_training = model.training
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(runs + 1):
            t0 = time.perf_counter()
            model.embed({"clip": clip.to(model.device)})
            if i:  # the first call warms up (allocations, lazy modules)
                times.append(time.perf_counter() - t0)
    model.train(was_training)
    return statistics.median(times)


def model_cost(model: torch.nn.Module) -> dict:
    """Parameters (all, and trained), the size of the serialised weights (what an index or a
    deployment keeps; a training checkpoint adds the optimizer's state) and
    :func:`embed_seconds`, with the threads it ran on."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    params = list(model.parameters())
    return {
        "params_m": round(sum(p.numel() for p in params) / 1e6, 2),
        "trainable_params_m": round(sum(p.numel() for p in params if p.requires_grad) / 1e6, 2),
        "weights_mb": round(buf.tell() / 1e6, 1),
        "embed_s": round(embed_seconds(model), 3),
        "clip": f"{model.clip_spec.frames}x{model.clip_spec.image_size}",
        "torch_threads": torch.get_num_threads(),
    }


def write_cost(folder: str | Path, cost: dict) -> Path:
    """``<folder>/cost.json`` (a run's ``retrieval/``), written whole or not at all."""
    path = Path(folder) / COST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(cost, indent=1))
    return path
