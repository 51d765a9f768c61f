"""Typed errors whose message is the whole user-facing explanation.

The CLI prints ``str(error)`` and exits with the error's :attr:`~MonorepoError.exit_code`
(2, or 1 for an operation that ran and failed); a library caller catches the
subclass it cares about.  Messages therefore name the file, package or key involved
and say how to fix the problem: no traceback reaches a user.

:func:`disk_full` is the one place that recognises a write that failed for want of
space, so that every writer (the download cache, the extractor, pull) says which disk
is full instead of blaming whatever it was writing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path


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


class TooSlowError(IndexClientError):
    """A download did not finish within its deadline (a floor plus its size at a minimum
    speed, see :class:`monorepo.index.deadline.Deadline`); the message names the URL."""


class MetadataError(MonorepoError):
    """A distribution's core metadata could not be obtained or parsed."""


class ResolutionError(MonorepoError):
    """The requirements cannot all hold together; the message explains why.

    *explanation* is the same content as data (``--json``): the derivation, its
    structured causes, the versions skipped and the fixes
    (:meth:`monorepo.resolve.explain.Explanation.to_dict`).
    """

    def __init__(self, message: str, explanation: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.explanation = explanation


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


class StorageError(MonorepoError):
    """A file monorepo keeps (in duni/ or the cache) cannot be written or repaired."""


class DiskFullError(StorageError):
    """A write failed because the file system holding it is full or over quota.

    The message names the directory being written (duni/, the download cache, a
    temporary directory) and the file system's mount point, so the user knows which
    disk to clear: the archive or package being written is not at fault.
    """


#: The errno values that mean "no room", whatever was being written.
_NO_ROOM = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)


def disk_full(
    error: BaseException, where: Path | str, *, what: str = "", fix: str = ""
) -> DiskFullError | None:
    """A :class:`DiskFullError` for *error* when it is ENOSPC or EDQUOT, else None.

    *where* is the directory being written, as the user knows it (``.../duni``, the
    cache's ``store``); *what* says what was being written, for the start of the
    message (``"lib 1.0: cannot extract lib-1.0.tar.gz"``); *fix* adds a remedy for
    that place (another directory to point the setting at).  Callers keep their own
    message for every other error: only a full disk is worded here.
    """
    if not isinstance(error, OSError) or error.errno not in _NO_ROOM:
        return None
    place = Path(where)
    quota = error.errno != errno.ENOSPC
    state = "over its quota" if quota else "full"
    mount = _mount_point(place)
    on = f" (the file system mounted at {mount})" if mount is not None else ""
    start = f"{what}: " if what else ""
    remedy = f"; or {fix}" if fix else ""
    return DiskFullError(
        f"{start}the disk holding {place} is {state}{on}: {error.strerror or error}."
        f" Free space on that disk{remedy}, then run the command again."
    )


def _mount_point(path: Path) -> Path | None:
    """The mount point of the file system holding *path* (or its nearest existing parent)."""
    try:
        current = Path(os.path.abspath(path))
        while not current.exists() and current.parent != current:
            current = current.parent
        device = current.stat().st_dev
        while current.parent != current and current.parent.stat().st_dev == device:
            current = current.parent
    except OSError:
        return None
    return current
