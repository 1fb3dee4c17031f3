"""Exception hierarchy.

Exceptions are for bugs and bad input. Expected per-exposure outcomes (rejected, skipped,
failed QA) are *returned* as records with a reason, never raised.
Every message names the offending file/setting and says what to do about it.
"""

from __future__ import annotations


class CrlibError(Exception):
    """Base class of every error crlib raises on purpose."""


class ConfigError(CrlibError):
    """A setting is missing or invalid (names the ``CRLIB_`` variable to fix)."""


class InputDataError(CrlibError):
    """An input file is unreadable, truncated, of the wrong instrument, or lacks an extension/keyword."""

    def __init__(self, path: object, problem: str, *, fix: str | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        message = f"{self.path}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class ArchiveError(CrlibError):
    """The archive (MAST or a local directory) could not answer after retries."""


class DatabaseError(CrlibError):
    """The results database cannot be reached or rejected a value."""


class ModelError(CrlibError):
    """A model's weights are missing, corrupt or incompatible with its architecture."""


class RequestError(CrlibError):
    """A request names nothing to process (a proposal or visit without exposures, a bad id)."""
