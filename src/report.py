"""Collect runs into one markdown report: `python src/report.py runs=[dir1,dir2] out=report.md`.

Tables II-IV beside the paper's numbers, the ablation table, Fig. 4, the δ plot, the PCA curve.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="report.yaml")
def main(cfg: DictConfig) -> None:
    from media_retrieval.cli.common import run_cli

    def report(cfg: DictConfig) -> None:
        from media_retrieval.errors import ConfigError
        from media_retrieval.reporting.report import write_report

        runs = [cfg.runs] if isinstance(cfg.runs, str) else list(cfg.runs)
        if not runs:
            raise ConfigError("runs=[...] is required: run folders or multirun folders holding them")
        out = write_report(runs, Path(cfg.out), int(cfg.k), float(cfg.delta),
                           Path(cfg.table3) if cfg.get("table3") else None)
        print(out.read_text())
        print(f"report: {out}")

    run_cli(report, cfg)


if __name__ == "__main__":
    from media_retrieval.cli.precheck import precheck_overrides

    precheck_overrides("report.yaml")
    main()
