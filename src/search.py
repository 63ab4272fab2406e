"""Search an index by video or image: `python src/search.py index_dir=... query=clip.mp4 k=10`.

See configs/search.yaml for the options and docs/search.md for examples.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="search.yaml")
def main(cfg: DictConfig) -> None:
    from media_retrieval.cli.common import run_cli
    from media_retrieval.cli.search import search

    run_cli(search, cfg)


if __name__ == "__main__":
    from media_retrieval.cli.precheck import precheck_overrides

    precheck_overrides("search.yaml")
    main()
