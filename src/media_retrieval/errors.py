"""One exception family whose messages are meant for the user, not for a traceback.

Entry points catch :class:`MediaRetrievalError` and print its message as a single line; any
other exception is a bug and keeps its traceback.
"""

import sys
from pathlib import Path


def command(name: str) -> str:
    """How to run our command ``name`` (index, search, serve, ...) in a hint, the way this process
    was started: ``python src/index.py`` from a checkout's scripts, ``media-retrieval index`` when
    installed (or ``python -m media_retrieval``)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.suffix == ".py" and script.name != "__main__.py":
        return f"python {(script.parent / f'{name}.py').as_posix()}"
    return f"media-retrieval {name}"


class MediaRetrievalError(Exception):
    """An error the user can fix (bad path, bad config, missing weights)."""


class DataError(MediaRetrievalError):
    """The data on disk cannot be used as asked (missing root, empty dataset, bad split file)."""


class ConfigError(MediaRetrievalError):
    """A configuration value is invalid or a combination is impossible."""


class WeightsUnavailableError(MediaRetrievalError):
    """Pretrained weights cannot be loaded (typically: offline and not in the local cache)."""


class TrainingDiverged(MediaRetrievalError):
    """Loss or weights became NaN/inf; the last good checkpoint is kept."""


class Interrupted(MediaRetrievalError):
    """Stopped by a signal (SIGTERM: exit code 143, Ctrl-C: 130); what was finished is on disk."""

    def __init__(self, message: str, exit_code: int = 143) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def oom_error(exc: BaseException) -> MediaRetrievalError | None:
    """Out of memory (GPU or host) as a user error that says which knob to turn."""
    import torch  # noqa: PLC0415 - torch stays unloaded until used

    text = str(exc)
    if isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError)
        and ("out of memory" in text or "can't allocate memory" in text)
    ):
        return MediaRetrievalError(
            f"out of memory ({text.splitlines()[0][:160]}): use a smaller batch: data.batch_size / "
            "data.eval_batch_size for training and evaluation, batch_size for src/index.py "
            "(data.feature_batch_size when building the feature cache)"
        )
    return None


def user_error(exc: BaseException) -> MediaRetrievalError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MediaRetrievalError):
            return exc
        oom = oom_error(exc)
        if oom is not None:
            return oom
        if (
            type(exc).__name__ == "MisconfigurationException"
        ):  # Lightning's word for a setting that cannot work
            return ConfigError(" ".join(str(exc).split())[:400])
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
