"""``media-retrieval <command> [overrides]`` (and ``python -m media_retrieval``): one entry point
whose subcommands are the Hydra apps of ``src/*.py``, with the same overrides and Hydra flags
(``--config-dir DIR`` adds a user's own configs, ``--cfg job`` prints the config, ``-m`` sweeps).

Installed commands keep ``data/``, ``logs/`` and ``.cache/`` under one root: the working
directory, unless ``MEDIA_RETRIEVAL_HOME`` or ``paths.root_dir=...`` says otherwise.
"""

from __future__ import annotations

import sys

#: command -> (root config, task, one-line help)
# fmt: off
COMMANDS = {
    "train": ("train.yaml", "media_retrieval.cli.train:train_for_sweep",
              "train a clip embedder, then evaluate retrieval on its test pool"),
    "eval": ("eval.yaml", "media_retrieval.cli.eval:evaluate",
             "evaluate a checkpoint's retrieval on a dataset"),
    "index": ("index.yaml", "media_retrieval.cli.index:run_index",
              "index a media folder (media_dir=... index_dir=...; re-runs update it)"),
    "search": ("search.yaml", "media_retrieval.cli.search:search",
               "search an index with a video, an image or a folder (index_dir=... query=...)"),
    "report": ("report.yaml", "media_retrieval.reporting.report:run_report",
               "tables and pictures from finished runs"),
    "serve": ("serve.yaml", "media_retrieval.serve.run:serve",
              "HTTP search service and web page over an index (index_dir=...)"),
}
# fmt: on

USAGE = """usage: media-retrieval <command> [key=value ...] [hydra flags]

Content-based visual media retrieval (Lightning + Hydra). Commands:
{commands}

Each command takes Hydra overrides, e.g.
  media-retrieval train model=cnn_lstm trainer.devices=2
  media-retrieval index media_dir=~/Videos index_dir=~/video-index ckpt_path=model.ckpt
  media-retrieval search index_dir=~/video-index query=clip.mp4 k=10
  media-retrieval serve index_dir=~/video-index
`media-retrieval <command> --help` lists its config groups; `--cfg job` prints its config;
`--config-dir DIR` adds your own configs. Outputs go under $MEDIA_RETRIEVAL_HOME (default: the
working directory): data/, logs/, .cache/.
"""


def usage() -> str:
    width = max(map(len, [*COMMANDS, "weights"]))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines.append(
        f"  {'weights':<{width}}  fetch pretrained weights once "
        "(weights fetch i3d-kinetics400; weights list)"
    )
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> object:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return None
    command, rest = args[0], args[1:]
    if command == "weights":  # no config to compose: plain arguments
        from media_retrieval.cli.weights import main as weights  # noqa: PLC0415 - cli.weights (and what it loads) stays unloaded until used

        return weights(rest)
    if command not in COMMANDS:
        print(
            f"error: unknown command {command!r}; one of: {', '.join(COMMANDS)}, weights "
            "(media-retrieval --help)",
            file=sys.stderr,
        )
        sys.exit(2)
    from media_retrieval.cli.launch import launch  # noqa: PLC0415 - cli.launch (and what it loads) stays unloaded until used

    config, task, _ = COMMANDS[command]
    sys.argv = [f"media-retrieval {command}", *rest]  # Hydra reads its overrides from sys.argv
    return launch(config, task)


if __name__ == "__main__":
    main()
