"""Saved embeddings: re-score retrieval (any k, any δ) without a model or the media.

Stored as ``.npz`` of plain arrays and read with ``allow_pickle=False``, so a file handed over
by someone else cannot execute code when loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from media_retrieval.errors import ConfigError
from media_retrieval.retrieval.evaluate import EmbeddingSet
from media_retrieval.utils.files import atomic_path

FIELDS = ("ids", "vectors", "labels", "seen", "is_query", "is_gallery", "class_names", "datasets")


def save_embeddings(
    path: str | Path,
    emb: EmbeddingSet,
    class_names: list[str],
    datasets: list[str],
    model: str = "model",
    role: str = "test",
) -> Path:
    """``role``: ``val`` (validation clips, where δ and other choices are made) or ``test``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        np.savez(
            tmp,
            ids=np.asarray(emb.ids, dtype=np.int64),
            vectors=emb.vectors.float().numpy(),
            labels=np.asarray(emb.labels, dtype=np.int64),
            seen=emb.seen.astype(bool),
            is_query=emb.is_query.astype(bool),
            is_gallery=emb.is_gallery.astype(bool),
            class_names=np.array(class_names, dtype=str),
            datasets=np.array(datasets, dtype=str),
            model=np.array(model, dtype=str),
            role=np.array(role, dtype=str),
            groups=np.array(emb.groups if emb.groups is not None else [], dtype=str),
            held_out=np.asarray(emb.held_out if emb.held_out is not None else [], dtype=bool),
            kinetics=np.asarray(emb.kinetics if emb.kinetics is not None else [], dtype=bool),
        )
    return path


def load_embeddings(path: str | Path) -> tuple[EmbeddingSet, list[str], list[str], str]:
    """(embeddings, class names, per-item dataset names, model name)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"embeddings={str(path)!r}: file not found (written by src/eval.py "
            "save_embeddings=true)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [f for f in FIELDS if f not in z.files]
            if missing:
                raise ConfigError(
                    f"embeddings={str(path)!r}: not a saved embeddings file (missing {missing})"
                )
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise ConfigError(f"embeddings={str(path)!r}: cannot be read safely ({exc})") from exc
    groups, held_out, kinetics = data.get("groups"), data.get("held_out"), data.get("kinetics")
    emb = EmbeddingSet(
        data["ids"],
        torch.from_numpy(data["vectors"]),
        data["labels"],
        data["seen"],
        data["is_query"],
        data["is_gallery"],
        groups if groups is not None and len(groups) == len(data["ids"]) else None,
        held_out.astype(bool)
        if held_out is not None and len(held_out) == len(data["ids"])
        else None,  # files from before held-out clips existed have none
        kinetics.astype(bool)
        if kinetics is not None and len(kinetics) == len(data["ids"])
        else None,
    )
    model = str(data["model"]) if "model" in data else "model"
    return emb, [str(c) for c in data["class_names"]], [str(d) for d in data["datasets"]], model


def embeddings_role(path: str | Path) -> str:
    """``val`` or ``test`` (files from before roles were recorded are test embeddings)."""
    with np.load(path, allow_pickle=False) as z:
        return str(z["role"]) if "role" in z.files else "test"
