"""Typed errors that every front end shows as one message: file, what is wrong, what to try."""
from __future__ import annotations

from pathlib import Path


class RmtError(Exception):
    """Base class for errors a user can act on. ``str()`` is the full message."""


class CheckpointError(RmtError):
    """A checkpoint (or data file) cannot be opened or read."""

    def __init__(self, path: str | Path, problem: str, hint: str = ""):
        self.path = Path(path)
        self.problem = problem
        self.hint = hint
        msg = f"{self.path}: {problem}"
        if hint:
            msg += f" — {hint}"
        super().__init__(msg)


class UnsafeCheckpointError(CheckpointError):
    """A pickle asked for code to run; it was refused before anything ran."""


class EvaluationError(RmtError):
    """An evaluator could not be loaded or failed."""


class OutputExistsError(RmtError):
    """An output file exists and overwriting was not asked for."""


class UsageError(RmtError):
    """An option or argument that cannot work as given."""


class InsufficientMemoryError(CheckpointError):
    """A tensor needs more memory than the machine has available; refused before reading it."""


class OutputWriteError(RmtError):
    """An output could not be written (disk full, read-only file system, permission denied);
    nothing was left behind."""


class MissingExtraError(RmtError):
    """An optional package a command needs is not installed; the message names the install line."""


class RmtWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. the cache is off)."""
