"""Typed errors whose message is the whole user-facing explanation.

The CLI prints ``str(error)`` and exits 2 for any :class:`MonorepoError`; a library
caller catches the subclass it cares about.  Messages therefore name the file,
package or key involved and say how to fix the problem: no traceback reaches a user.
"""

from __future__ import annotations


class MonorepoError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


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
