"""Typed errors whose message is the whole user-facing explanation.

The CLI prints ``str(error)`` and exits with the error's :attr:`~MonorepoError.exit_code`
(2, or 1 for an operation that ran and failed); a library caller catches the
subclass it cares about.  Messages therefore name the file, package or key involved
and say how to fix the problem: no traceback reaches a user.
"""

from __future__ import annotations

from collections.abc import Sequence


class MonorepoError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2
    """The CLI's exit status for it (DESIGN.md: 1 failed, 2 usage or configuration)."""


class ConfigError(MonorepoError):
    """pyproject.toml (or another input file) is malformed or inconsistent."""


class IndexClientError(MonorepoError):
    """The package index could not be read (network, HTTP status, bad page)."""


class OfflineError(IndexClientError):
    """``--offline`` was asked for and the cache does not hold what is needed."""


class MetadataError(MonorepoError):
    """A distribution's core metadata could not be obtained or parsed."""


class ResolutionError(MonorepoError):
    """The requirements cannot all hold together; the message explains why."""


class LockFileError(MonorepoError):
    """pylock.toml is missing, malformed, or lacks what an operation needs."""


class StaleLockError(LockFileError):
    """pylock.toml no longer fits pyproject.toml (``lock --check``'s reasons in *reasons*).

    ``pull`` and ``build`` refuse such a lock unless told ``frozen``, as uv's
    ``--locked`` and ``--frozen`` do: they never re-lock on their own.
    """

    exit_code = 1

    def __init__(self, message: str, reasons: Sequence[str]) -> None:
        super().__init__(message)
        self.reasons = tuple(reasons)


class HashMismatchError(MonorepoError):
    """Downloaded bytes do not have the size or sha256 the lock records."""


class ExtractError(MonorepoError):
    """An archive was refused by the safe extractor (names package and member)."""


class OverlayError(MonorepoError):
    """An overlay repository is malformed or one of its patches does not apply."""


class PullError(MonorepoError):
    """duni/ could not be brought in line with the lock (e.g. local edits)."""


class BuildError(MonorepoError):
    """duni/ cannot be built: bad input, missing system libraries, no build environment."""
