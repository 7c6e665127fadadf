"""The user errors of leashed.

Every mistake a user can make (bad option, missing data, unreadable file, divergence) raises a
``LeashedError`` whose message is one line saying what is wrong and what to change. The command line
prints it as ``leashed: error: <message>`` on stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations


class LeashedError(Exception):
    """A one-line, user-facing error: what is wrong and what to change."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)


class SpecError(LeashedError, ValueError):
    """An invalid experiment specification (unknown algorithm, 0 threads, negative lr, ...)."""


class DataError(LeashedError):
    """A data set that is missing, corrupt or of the wrong shape."""


class ResultsFileError(LeashedError):
    """A results file that is missing, truncated, corrupt or of an unsupported format version."""


class DivergenceError(LeashedError):
    """Training produced a non-finite loss or parameters."""
