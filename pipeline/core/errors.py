"""Errors a user can act on.

Every error that reaches a user names what was wrong and where: the file (URI) and, where
there is one, the row. The jobs print ``str(err)`` as one line instead of a traceback.
"""

from __future__ import annotations


class VaezipError(Exception):
    """Base class: an error with a message meant for the person running the job."""


class ConfigError(VaezipError):
    """A bad argument or configuration value."""


class InputError(VaezipError):
    """Input data that cannot be read or does not fit the model.

    ``retryable`` is False for corrupt data (retrying cannot help) and True for failures
    that can pass (a transient storage error).
    """

    def __init__(self, uri: str, reason: str, row: int | None = None, retryable: bool = False):
        self.uri = uri
        self.row = row
        self.reason = reason
        self.retryable = retryable
        where = uri if row is None else f"{uri} row {row}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str, int | None, bool]]:
        # Rebuilt from its fields when it crosses processes (a Ray worker -> the driver).
        return InputError, (self.uri, self.reason, self.row, self.retryable)


class CheckpointError(VaezipError):
    """A checkpoint that is missing, truncated, tampered with or of an unknown kind."""
