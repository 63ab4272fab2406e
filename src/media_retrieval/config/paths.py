"""Where things live: the root of ``data/``, ``logs/`` and ``.cache/``, and the shared real
footage (the one place that says where it is).

Only hydra and omegaconf are imported here (never torch): this runs before the heavy imports."""

from __future__ import annotations

import os


def home_dir() -> str:
    """Where ``data/``, ``logs/`` and ``.cache/`` live (``paths.root_dir``):
    ``$MEDIA_RETRIEVAL_HOME``,
    else ``$PROJECT_ROOT`` (set by ``src/*.py`` and the tests to the repository), else the
    working directory (installed commands)."""
    return os.path.abspath(
        os.environ.get("MEDIA_RETRIEVAL_HOME") or os.environ.get("PROJECT_ROOT") or os.getcwd()
    )


def real_clips_dir(root: str | None = None) -> str:
    """The shared real footage (``paths.real_clips_dir``): ``$MEDIA_RETRIEVAL_REAL_CLIPS``, else
    ``../shared/data/real-clips`` beside ``root`` (default :func:`home_dir`). The one place that
    says where it is: configs, benchmarks and tests all ask here."""
    env = os.environ.get("MEDIA_RETRIEVAL_REAL_CLIPS")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.normpath(os.path.join(root or home_dir(), "..", "shared", "data", "real-clips"))
