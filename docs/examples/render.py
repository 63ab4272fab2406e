"""Examples that cannot go stale: run each example script and rewrite what the docs show of it.

    python docs/examples/render.py            # `make docs`: rerun every example, rewrite the docs
    python docs/examples/render.py --check    # only list outputs older than their script

A document shows an example between two markers::

    <!-- example:NAME sha256=<first 12 hex of the script> (`make docs` rewrites this block) -->
    ...
    <!-- /example:NAME -->

where ``docs/examples/NAME.sh`` is a bash script run from the repository root (with
``.venv/bin`` first on ``PATH``). Its lines up to the first marker comment are set-up, run and
not shown. After that, ``# show`` before a command shows the command and its output (stdout and
stderr, as a user sees them: colours and progress redraws removed, the repository's absolute
path cut off); ``# say`` before a command shows its output as prose (a sentence about the
output, computed from it, so a claim cannot outlive its numbers); ``# output`` before a command
shows only its output (a result the set-up produced, e.g. the end of ``make demo``'s own
output); ``# code`` before a file's path shows that file as a listing (a Python example, shown
as the code a user copies, then run by a later step); ``# finally`` before a
command runs it at the end whatever happened, unshown (e.g. stopping a service). The hash of the
script and
of the files it lists goes into the opening marker, so a test fails when either changed after
its output was recorded.

Written here rather than with a docs tool (e.g. cog, mdx): the examples are shell sessions
whose set-up must stay hidden, and these 100 lines are all that needs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = Path(__file__).resolve().parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REGION = re.compile(
    r"<!-- example:(?P<name>[\w-]+) sha256=(?P<sha>[0-9a-f]*)[^>]*-->\n(?P<body>.*?)"
    r"<!-- /example:(?P=name) -->",
    re.S,
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Step:
    kind: str  # "show" | "say" | "output" | "code" | "finally"
    command: str


def script_hash(name: str) -> str:
    """The script's bytes, then those of each file it shows with ``# code``."""
    digest = hashlib.sha256((EXAMPLES / f"{name}.sh").read_bytes())
    for step in parse(EXAMPLES / f"{name}.sh")[1]:
        if step.kind == "code":
            digest.update((ROOT / step.command).read_bytes())
    return digest.hexdigest()[:12]


def parse(script: Path) -> tuple[str, list[Step]]:
    """(the set-up, the shown steps)."""
    lines = script.read_text().splitlines()
    marks = [
        i
        for i, line in enumerate(lines)
        if line.strip() in ("# show", "# say", "# output", "# code", "# finally")
    ]
    if not marks:
        raise SystemExit(f"{script}: no '# show' or '# say' line")
    steps = [Step(lines[i].strip()[2:], lines[i + 1]) for i in marks]
    return "\n".join(lines[: marks[0]]), steps


def clean(text: str, cwd: Path) -> str:
    """What a user reads: no colour codes, the last state of each progress redraw, no absolute
    path of the checkout."""
    out = []
    for line in ANSI.sub("", text).splitlines():
        out.append(line.split("\r")[-1].rstrip())
    text = "\n".join(out).strip("\n")
    for base in {str(cwd.resolve()), str(cwd)}:
        text = text.replace(base + "/", "")
    return text


def run(name: str, cwd: Path = ROOT, env: dict | None = None) -> list[tuple[Step, str]]:
    """Run one example in ``cwd``; (step, its cleaned output) per shown step."""
    env = {
        **os.environ,
        **(env or {}),
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "120",
        "PYTHONPATH": str(ROOT / "src"),
    }
    setup, steps = parse(EXAMPLES / f"{name}.sh")
    shown = []
    try:
        subprocess.run(["bash", "-c", setup], cwd=cwd, env=env, check=True)
        for step in (s for s in steps if s.kind != "finally"):
            if step.kind == "code":
                shown.append((step, (ROOT / step.command).read_text().strip("\n")))
                continue
            r = subprocess.run(
                ["bash", "-c", f"set -o pipefail; {step.command}"],
                cwd=cwd,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if r.returncode:
                raise SystemExit(
                    f"example {name}: `{step.command}` failed ({r.returncode}):\n{r.stdout[-3000:]}"
                )
            shown.append((step, clean(r.stdout, cwd)))
    finally:  # e.g. stop a service the set-up started, whatever failed
        for step in (s for s in steps if s.kind == "finally"):
            subprocess.run(["bash", "-c", step.command], cwd=cwd, env=env)
    return shown


def markdown(shown: list[tuple[Step, str]]) -> str:
    parts = []
    for step, output in shown:
        if step.kind == "show":
            parts.append(f"```bash\n{step.command}\n```\n```\n{output}\n```")
        elif step.kind == "code":
            parts.append(f"```{'python' if step.command.endswith('.py') else ''}\n{output}\n```")
        elif step.kind == "output":
            parts.append(f"```\n{output}\n```")
        else:
            parts.append(output)
    return "\n".join(parts) + "\n"


def regions() -> list[tuple[Path, re.Match]]:
    return [(doc, m) for doc in DOCS for m in REGION.finditer(doc.read_text())]


def stale() -> list[str]:
    """Shown outputs whose script changed after they were recorded (or that name no script)."""
    out = []
    for doc, m in regions():
        script = EXAMPLES / f"{m['name']}.sh"
        if not script.is_file():
            out.append(
                f"{doc.relative_to(ROOT)}: example {m['name']} has no script "
                f"{script.relative_to(ROOT)}"
            )
        elif m["sha"] != script_hash(m["name"]):
            out.append(
                f"{doc.relative_to(ROOT)}: example {m['name']} was recorded from another version "
                "of its "
                "script: run `make docs`"
            )
    return out


def render() -> None:
    done: dict[str, str] = {}
    for doc in DOCS:
        text = doc.read_text()

        def block(m: re.Match) -> str:
            name = m["name"]
            if name not in done:
                print(f"example {name} ...", flush=True)
                done[name] = markdown(run(name))
            return (
                f"<!-- example:{name} sha256={script_hash(name)} (`make docs` rewrites this block) "
                "-->\n"
                f"{done[name]}<!-- /example:{name} -->"
            )

        new = REGION.sub(block, text)
        if new != text:
            doc.write_text(new)
            print(f"rewrote {doc.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--check", action="store_true", help="only list outputs older than their script"
    )
    if ap.parse_args().check:
        problems = stale()
        print("\n".join(problems) or "every shown example matches its script")
        sys.exit(1 if problems else 0)
    render()


if __name__ == "__main__":
    main()
