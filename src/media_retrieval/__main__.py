"""``python -m media_retrieval <command> [overrides]``: the same as ``media-retrieval``."""

from media_retrieval.cli.main import main

if __name__ == "__main__":
    main()
