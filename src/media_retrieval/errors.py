"""One exception family whose messages are meant for the user, not for a traceback.

Entry points catch :class:`MediaRetrievalError` and print its message as a single line; any
other exception is a bug and keeps its traceback.
"""


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
