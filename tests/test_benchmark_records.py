"""Long results are recorded, not rerun (issue 28): each file in benchmarks/results/ names the
command, commit, machine and script version that made it, and a script changed after its
results were recorded fails here until they are rerun (or the change is reviewed)."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import yaml
from conftest import ROOT

spec = importlib.util.spec_from_file_location("records", ROOT / "benchmarks" / "records.py")
records = importlib.util.module_from_spec(spec)
sys.modules["records"] = records
spec.loader.exec_module(records)


def test_every_benchmark_result_is_recorded_from_its_script_as_it_is():
    assert len(records.load()) >= 10
    assert records.problems() == []


def test_a_script_changed_after_its_results_fails_until_rerun_or_reviewed(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    script = tmp_path / "benchmarks" / "bench.py"
    script.write_text("print('measure')\n")
    (tmp_path / "benchmarks" / "results" / "bench.json").write_text("{}")
    recs = tmp_path / "benchmarks" / "results" / "RECORDS.yaml"
    entry = {
        "files": ["bench.json"],
        "command": "python benchmarks/bench.py",
        "script": "benchmarks/bench.py",
        "commit": "abc1234",
        "machine": "2 cores",
        "script_sha256": records.script_sha(script),
    }
    recs.write_text(yaml.safe_dump([entry]))
    assert records.problems(recs, tmp_path) == []

    script.write_text("print('measure differently')\n")
    assert records.problems(recs, tmp_path) == [
        "bench.json: benchmarks/bench.py changed after these results were recorded (at abc1234): "
        "rerun `python benchmarks/bench.py` and record it, or review the change"
    ]
    recs.write_text(
        yaml.safe_dump(
            [
                {
                    **entry,
                    "reviewed": {"script_sha256": records.script_sha(script), "why": "a comment"},
                }
            ]
        )
    )
    assert records.problems(recs, tmp_path) == []
    script.write_text("print('and again')\n")
    assert len(records.problems(recs, tmp_path)) == 1  # a review covers one version only

    shutil.copy(
        tmp_path / "benchmarks" / "results" / "bench.json",
        tmp_path / "benchmarks" / "results" / "new.md",
    )
    assert (
        "results/new.md has no record in RECORDS.yaml: say which command made it"
        in records.problems(recs, tmp_path)
    )
