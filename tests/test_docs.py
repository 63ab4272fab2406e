"""Examples that cannot go stale (issue 28): what the docs show of an example is the output of
its script under docs/examples/ (``make docs`` rewrites it), a shown output older than its
script fails here, and the README's search example runs as written on a few real clips."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import socket
import sys
from pathlib import Path

import pytest
from conftest import REAL_CLIPS, ROOT
from omegaconf import open_dict

spec = importlib.util.spec_from_file_location("render", ROOT / "docs" / "examples" / "render.py")
render = importlib.util.module_from_spec(spec)
sys.modules["render"] = render  # dataclasses look their module up there
spec.loader.exec_module(render)
REAL = REAL_CLIPS


def test_every_shown_example_was_recorded_from_its_script_as_it_is():
    assert render.regions(), "no example regions found in the docs"
    assert render.stale() == []


def test_a_changed_script_makes_its_shown_output_stale(tmp_path, monkeypatch):
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "demo_x.sh").write_text("# show\necho hello\n")
    doc = tmp_path / "doc.md"
    monkeypatch.setattr(render, "EXAMPLES", examples)
    monkeypatch.setattr(render, "DOCS", [doc])
    monkeypatch.setattr(render, "ROOT", tmp_path)
    doc.write_text("intro\n<!-- example:demo_x sha256= -->\nold\n<!-- /example:demo_x -->\nrest\n")
    render.render()
    text = doc.read_text()
    assert (
        "```bash\necho hello\n```\n```\nhello\n```\n" in text
        and "old" not in text
        and text.endswith("rest\n")
    )
    assert render.stale() == []
    (examples / "demo_x.sh").write_text("# show\necho changed\n")
    assert render.stale() == [
        "doc.md: example demo_x was recorded from another version of its script: run `make docs`"
    ]


@pytest.mark.slow
@pytest.mark.skipif(
    not (REAL / "gestures-mini").is_dir() or not (REAL / "ucf101-mini").is_dir(),
    reason=f"the shared real clips (gestures-mini, ucf101-mini) are not at {REAL}",
)
def test_the_readme_search_service_and_python_examples_run_as_written_on_a_few_clips(
    tmp_path, cfg_train
):
    """The README's commands, in order, on 3 clips per class; what the README says of them holds:
    an index line, one table per query with its kept count, and the PAR sentence's numbers
    match the tables; then the service on that index answers /health and an uploaded still;
    then the Python example, with a small trained model where `make demo`'s would be."""
    (tmp_path / "src").symlink_to(ROOT / "src")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "examples").symlink_to(ROOT / "docs" / "examples")
    (tmp_path / "docs" / "images").mkdir()
    shown = render.run(
        "search_own_media",
        cwd=tmp_path,
        env={"EXAMPLE_CLIPS": "few", "MEDIA_RETRIEVAL_REAL_CLIPS": str(REAL)},
    )
    readme = (ROOT / "README.md").read_text()
    steps = render.parse(render.EXAMPLES / "search_own_media.sh")[1]
    assert [s for s, _ in shown] == steps and all(
        s.command in readme for s in steps if s.kind == "show"
    )
    index_out, search_out, said = (out for _, out in shown)
    assert re.search(
        r"index: data/my_index \(gen-000001\): (\d+) segments from \1 files; embedded \1", index_out
    )
    assert index_out.count("GPU available") <= 1  # each log line once
    kept = [
        (int(a), int(b))
        for a, b in re.findall(r"\(PAR δ = [\d.]+: (\d+) of (\d+) kept\)", search_out)
    ]
    assert len(kept) == 3 and all(b == 5 for _, b in kept)
    assert (tmp_path / "docs" / "images" / "search_contact_sheet.png").stat().st_size > 0
    m = re.fullmatch(
        r"Of the 3 queries' top 5, (\d+) hits are of the query's class and (\d+) of another\. "
        r"PAR at δ = [\d.]+ keeps (\d+) of the \1 right ones and drops (\d+) of the \2 wrong "
        r"ones\.",
        said,
    )
    assert m, said
    right, wrong, right_kept, wrong_dropped = map(int, m.groups())
    assert right + wrong == 15 and right_kept + (wrong - wrong_dropped) == sum(a for a, _ in kept)

    # the service section's requests, on the index just built (the README's order), within the
    # README's first 150 lines: a new user meets search and the service before the reference
    assert readme[: readme.index("curl -s -F file=")].count("\n") + 1 < 150
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("port 8000 is in use here: the README's service example cannot run")
    health, search = (json.loads(out) for _, out in render.run("service", cwd=tmp_path))
    assert health == {"status": "ok", "generation": "gen-000001"}
    assert search["query"] == "bench_press_still.jpg" and search["generation"] == "gen-000001"
    assert [h["rank"] for h in search["hits"]] == [1, 2]
    assert all((tmp_path / "data" / "my_media" / h["rel_path"]).is_file() for h in search["hits"])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", 8000)) != 0  # stopped by the script's `# finally` step

    from media_retrieval.cli.train import train

    with open_dict(cfg_train):
        cfg_train.trainer.max_epochs = 1
    train(cfg_train)
    runs = tmp_path / "logs" / "train" / "runs" / "2026-01-01_00-00-00" / "checkpoints"
    runs.mkdir(parents=True)
    (runs / "epoch_000.ckpt").symlink_to(
        Path(cfg_train.paths.output_dir) / "checkpoints" / "last.ckpt"
    )
    shown = render.run("python_api", cwd=tmp_path)
    (code_step, code), (_, out) = shown
    assert (
        code == (ROOT / code_step.command).read_text().strip("\n")
        and "```python\n" + code in readme
    )
    lines = out.splitlines()  # what the example prints, among the log lines a user also sees

    def printed(prefix: str) -> str:
        return next(line for line in lines if line.startswith(prefix))

    assert (
        printed("clip spec: ")
        == "clip spec: {'frames': 4, 'image_size': 64, 'resize': 'short_side_crop', "
        "'in_chans': 3, 'sampling': 'index', 'chunk_s': None}"
    )
    assert re.fullmatch(r"vector: \(\d+,\)", printed("vector: "))
    delta = re.fullmatch(r"δ = ([\d.]+)( chosen on validation| \(default\))", printed("δ = "))
    assert delta, printed("δ = ")
    hits = [
        m
        for line in lines
        if (
            m := re.fullmatch(
                r"(\d) (\S+) ([\d.]+) (-?[\d.]+) "
                r"kept=(True|False)",
                line,
            )
        )
    ]
    assert [int(h[1]) for h in hits] == [1, 2, 3], lines
    assert all((tmp_path / "data" / "my_media" / h[2]).is_file() for h in hits)
    assert all(
        (h[5] == "True") == (float(h[4]) >= float(delta[1])) for h in hits
    )  # kept: cosine ≥ δ
    assert re.fullmatch(
        r"update: \{.*'embedded': 0, 'reused': \d+, 'removed': 0.*\}", printed("update: ")
    )
    assert printed("reload: ") == "reload: False"
    assert not any(
        "Tip" in line or "LeafSpec" in line for line in lines
    )  # Lightning's noise stays out


def test_the_code_map_lists_the_packages_in_the_layer_contracts_order():
    """`make lint` enforces the layers in pyproject.toml; the README's code map is how people
    learn them, so it shows them top to bottom in the same order."""
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ][0]["layers"]
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Code map") :]
    block = block[block.index("```") : block.index("```", block.index("```") + 3)]
    position = {}
    for line in block.splitlines():
        entry = line[2:].split()[0] if line.startswith("  ") and not line.startswith("   ") else ""
        position.setdefault(entry.rstrip("/").removesuffix(".py"), len(position))
    ranks = []
    for layer in layers:
        names = [m.strip().removeprefix("media_retrieval.") for m in layer.split("|")]
        missing = [n for n in names if n not in position]
        assert not missing, f"the code map lacks {missing}"
        ranks.append((min(position[n] for n in names), max(position[n] for n in names), layer))
    for (_, hi, upper), (lo, _, lower) in itertools.pairwise(ranks):
        assert hi < lo, f"the code map shows {lower} above {upper}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters, hyphens
    and spaces kept), spaces to hyphens; a repeated heading gets -1, -2, ..."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", md.read_text(), flags=re.S | re.M)
    out: set[str] = set()
    counts: dict[str, int] = {}
    for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M):
        s = _slug(m.group(1))
        n = counts.get(s, 0)
        counts[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def broken_links(files: list[Path]) -> list[str]:
    """Relative links (file, and the heading after ``#`` in a Markdown file) that lead nowhere."""
    bad = []
    for f in files:
        text = re.sub(r"^```.*?^```", "", f.read_text(), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, frag = target.partition("#")
            dest = (f.parent / path) if path else f
            if not dest.exists():
                bad.append(f"{f.name}: {target} (no such file)")
            elif frag and dest.suffix == ".md" and frag not in _anchors(dest):
                bad.append(f"{f.name}: {target} (no such heading)")
    return bad


DOC_FILES = [
    ROOT / "README.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "benchmarks" / "results").glob("*.md")),
]


def test_every_relative_link_in_the_docs_leads_to_a_file_and_heading():
    assert broken_links(DOC_FILES) == []


def test_a_link_to_a_missing_heading_or_file_is_reported(tmp_path):
    (tmp_path / "b.md").write_text("# Search backends at scale (issue 7)\n\n## Twice\n\n## Twice\n")
    a = tmp_path / "a.md"
    a.write_text(
        "[ok](b.md#search-backends-at-scale-issue-7) [ok](b.md#twice-1) [ok](#here)\n"
        "[old](b.md#search-backends-at-scale) [gone](c.md) [web](https://example.org/x#y)\n"
        "```\n[in code](nowhere.md)\n```\n# Here\n"
    )
    assert broken_links([a]) == [
        "a.md: b.md#search-backends-at-scale (no such heading)",
        "a.md: c.md (no such file)",
    ]
