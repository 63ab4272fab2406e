"""Index a folder of videos and images for search: `python src/index.py ckpt_path=... media_dir=... index_dir=...`.

See configs/index.yaml for the options and docs/search.md for the index format.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="index.yaml")
def main(cfg: DictConfig) -> None:
    from media_retrieval.cli.common import run_cli
    from media_retrieval.cli.index import run_index

    run_cli(run_index, cfg)


if __name__ == "__main__":
    from media_retrieval.cli.precheck import precheck_overrides

    precheck_overrides("index.yaml")
    main()
