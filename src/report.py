"""Collect runs into one markdown report: `python src/report.py runs=[dir1,dir2] out=report.md`.

Tables II-IV beside the paper's numbers, the ablation table, Fig. 4, the δ plot, the PCA curve.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from media_retrieval.cli.launch import launch

    launch("report.yaml", "media_retrieval.reporting.report:run_report")
