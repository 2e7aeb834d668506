"""Exceptions that carry a user-facing, one-line explanation."""

from __future__ import annotations

__all__ = ["MedcoreError", "ConfigError", "DataError", "StageError", "RunIdError", "one_line"]


class MedcoreError(Exception):
    """Base class: the message is meant to be shown to a user as it is, without a traceback."""


class ConfigError(MedcoreError):
    """The configuration file is malformed; the message names the file and the key."""


class DataError(MedcoreError):
    """A dataset cannot be used for training; the message names the file or row."""


class StageError(MedcoreError):
    """A pipeline stage cannot run because an earlier stage left nothing to build on."""


class RunIdError(MedcoreError, ValueError):
    """A run id that cannot name a run folder (empty, '..', NUL, too long)."""


class Skipped(Exception):  # noqa: N818 control flow (nothing to train), not an error
    """A stage with nothing to do tonight (e.g. data, config and code unchanged): not a failure, no retry."""


def one_line(exc: BaseException) -> str:
    """The error as one line a person can act on: medcore's own messages as they are, others with their type."""
    text = " ".join(str(exc).split()) or "(no message)"
    return text if isinstance(exc, MedcoreError) else f"{type(exc).__name__}: {text}"
