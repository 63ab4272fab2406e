"""Which command, commit, machine and script version made each file in ``benchmarks/results/``.

    python benchmarks/records.py --check        # results whose script changed since (exit 1 if any)
    python benchmarks/records.py record results/serve.json --script benchmarks/serve.py \\
        --command "PYTHONPATH=src .venv/bin/python benchmarks/serve.py"   # after a run
    python benchmarks/records.py review benchmarks/serve.py --why "..."  # a harmless change

The records live in ``benchmarks/results/RECORDS.yaml`` (its header says how to read them). A
benchmark's numbers are only as current as the script that made them, and a benchmark takes
minutes to hours, so no test reruns them: instead a test fails when a script changed after its
results were recorded, which is what makes a stale number visible. Written here rather than with
a benchmark tool (asv, pytest-benchmark): those time functions; these scripts measure quality
and whole pipelines and write their own tables.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECORDS = RESULTS / "RECORDS.yaml"
NOT_RESULTS = {"RECORDS.yaml", ".gitignore"}


def script_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load(records: Path = RECORDS) -> list[dict]:
    return yaml.safe_load(records.read_text()) or []


def problems(records: Path = RECORDS, root: Path = ROOT) -> list[str]:
    """One sentence per result that is not recorded, or whose script changed since it was."""
    results = records.parent
    out, seen = [], set()
    for rec in load(records):
        for key in ("files", "command", "script", "commit", "machine", "script_sha256"):
            if not rec.get(key):
                out.append(f"{records.name}: a record of {rec.get('files')} has no {key}")
        names = rec.get("files") or []
        seen.update(names)
        missing = [n for n in names if not (results / n).is_file()]
        if missing:
            out.append(f"{records.name}: {', '.join(missing)} recorded but not in {results.name}/")
        script = root / str(rec.get("script"))
        if not script.is_file():
            out.append(f"{', '.join(names)}: its script {rec.get('script')} does not exist")
            continue
        if rec.get("historical"):
            continue  # an earlier round, kept for comparison: its script is the one at `commit`
        now = script_sha(script)
        if now not in (rec.get("script_sha256"), (rec.get("reviewed") or {}).get("script_sha256")):
            out.append(
                f"{', '.join(names)}: {rec['script']} changed after these results were recorded "
                f"(at {rec['commit']}): rerun `{rec['command']}` and record it, or review the "
                "change"
            )
    for path in sorted(results.iterdir()):
        if (
            path.is_file()
            and path.name not in NOT_RESULTS
            and path.suffix in (".json", ".md")
            and path.name not in seen
        ):
            out.append(
                f"{results.name}/{path.name} has no record in {records.name}: say which command "
                "made it"
            )
    return out


def save(recs: list[dict]) -> None:
    """Rewrite RECORDS.yaml with ``recs``, its comment header kept."""
    head = "".join(
        line for line in RECORDS.read_text().splitlines(keepends=True) if line.startswith("#")
    )
    RECORDS.write_text(head + yaml.safe_dump(recs, sort_keys=False, width=100, allow_unicode=True))


def record(files: list[str], script: str, command: str, machine: str | None = None) -> None:
    """Add or replace the record of ``files`` with the script's hash now and the current commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    names = [Path(f).name for f in files]
    entry = {
        "files": names,
        "command": command,
        "script": script,
        "commit": commit,
        "machine": machine or f"{platform.machine()}, {os.cpu_count()} cores",
        "script_sha256": script_sha(ROOT / script),
    }
    save([r for r in load() if not set(r["files"]) & set(names)] + [entry])
    print(f"recorded {', '.join(names)} ({script} at {commit})")


def review(scripts: list[str], why: str) -> None:
    """Mark the current version of ``scripts`` as reviewed for every result they made: a
    change that cannot alter what was measured (a reformat, a comment). Historical records are
    left as they are; each earlier reason stays, the new one is added."""
    recs = load()
    for rec in recs:
        if rec["script"] in scripts and not rec.get("historical"):
            now = script_sha(ROOT / rec["script"])
            if now in (rec["script_sha256"], (rec.get("reviewed") or {}).get("script_sha256")):
                continue
            before = (rec.get("reviewed") or {}).get("why")
            rec["reviewed"] = {"script_sha256": now, "why": f"{before}; {why}" if before else why}
            print(f"reviewed {', '.join(rec['files'])}: {rec['script']}")
    save(recs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--check",
        action="store_true",
        help="list results whose script changed since they were made",
    )
    sub = ap.add_subparsers(dest="cmd")
    rec = sub.add_parser("record", help="record files just made by a run")
    rec.add_argument("files", nargs="+")
    rec.add_argument("--script", required=True)
    rec.add_argument("--command", required=True)
    rec.add_argument("--machine")
    rev = sub.add_parser(
        "review", help="a change to scripts that cannot alter their results (say why)"
    )
    rev.add_argument("scripts", nargs="+")
    rev.add_argument("--why", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "record":
        record(args.files, args.script, args.command, args.machine)
        return
    if args.cmd == "review":
        review(args.scripts, args.why)
        return
    found = problems()
    print(
        "\n".join(found)
        or "every result in benchmarks/results/ is recorded from its script as it is"
    )
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
