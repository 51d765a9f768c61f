"""Typed errors whose message is the whole user-facing explanation.

The CLI prints ``str(error)`` and exits with the error's :attr:`~MonorepoError.exit_code`
(1 for an operation that ran and failed, 2 for a usage or configuration error); a
library caller catches the subclass it cares about.  Messages therefore name the file,
package or key involved and say how to fix the problem: no traceback reaches a user.
Besides the message, an error carries what a program needs to act on it without
parsing text: a stable :attr:`~MonorepoError.code` and, when known, the ``package``,
``path``, ``url`` and ``hint`` (:meth:`~MonorepoError.to_dict` is the ``--json`` form).

:func:`disk_full` is the one place that recognises a write that failed for want of
space, so that every writer (the download cache, the extractor, pull) says which disk
is full instead of blaming whatever it was writing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
"""Exit status of an operation that ran and failed (DESIGN.md section 1)."""
EXIT_USAGE = 2
"""Exit status of a usage or configuration error: nothing was attempted."""


class MonorepoError(Exception):
    """Base class: a problem with the user's input or environment, not a bug.

    *package*, *path*, *url* and *hint* are optional structured fields (the message
    already says all of it in words); *exit_code* overrides the class's for one error
    (a :class:`BuildError` for an unknown ``--target`` is a usage error).
    """

    exit_code = EXIT_FAILED
    """The CLI's exit status for it (DESIGN.md: 1 failed, 2 usage or configuration)."""
    code = "error"
    """A stable machine-readable name of the error class (``--json``'s ``code``)."""

    def __init__(
        self,
        message: str = "",
        *,
        package: str | None = None,
        path: str | os.PathLike[str] | None = None,
        url: str | None = None,
        hint: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.package = package
        self.path = str(path) if path is not None else None
        self.url = url
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def fields(self) -> dict[str, Any]:
        """The structured fields (``package``, ``path``, ``url``, ``hint``) that are set."""
        names = ("package", "path", "url", "hint")
        return {k: getattr(self, k) for k in names if getattr(self, k, None) is not None}

    def to_dict(self) -> dict[str, Any]:
        """The error as ``--json`` prints it (schema in docs/api.md)."""
        return {
            "code": self.code,
            "type": type(self).__name__,
            "message": str(self),
            "exit_code": self.exit_code,
            **self.fields(),
        }

    def annotate(self, **fields: str | os.PathLike[str] | None) -> MonorepoError:
        """Fill the structured fields still unset (a caller that knows the package or URL
        adds them on the way up); returns the error itself, to re-raise it."""
        for name, value in fields.items():
            if value is not None and getattr(self, name, None) is None:
                setattr(self, name, str(value))
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (index workers, the extractor pool): keep the
        # structured fields, which Exception's default pickling (args only) would drop.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[MonorepoError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class UsageError(MonorepoError):
    """The command line is wrong: an unknown flag, a missing argument, no project found."""

    exit_code = EXIT_USAGE
    code = "usage"


class ConfigError(MonorepoError):
    """pyproject.toml (or another input file) is malformed or inconsistent."""

    exit_code = EXIT_USAGE
    code = "config"


class IndexClientError(MonorepoError):
    """The package index could not be read (network, HTTP status, bad page)."""

    code = "index"


class OfflineError(IndexClientError):
    """``--offline`` was asked for and the cache does not hold what is needed."""

    code = "offline"


class TooSlowError(IndexClientError):
    """A download did not finish within its deadline (a floor plus its size at a minimum
    speed, see :class:`monorepo.index.deadline.Deadline`); the message names the URL."""

    code = "too-slow"


class MetadataError(MonorepoError):
    """A distribution's core metadata could not be obtained or parsed."""

    code = "metadata"


class ResolutionError(MonorepoError):
    """The requirements cannot all hold together; the message explains why.

    *explanation* is the same content as data (``--json``): the derivation, its
    structured causes, the versions skipped and the fixes
    (:meth:`monorepo.resolve.explain.Explanation.to_dict`).
    """

    exit_code = 1

    def __init__(self, message: str, explanation: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.explanation = explanation

    code = "resolution"

    def fields(self) -> dict[str, Any]:
        """The base fields plus the structured ``explanation``, when there is one."""
        out = super().fields()
        if self.explanation is not None:
            out["explanation"] = self.explanation
        return out


class LockFileError(MonorepoError):
    """pylock.toml is missing, malformed, or lacks what an operation needs."""

    exit_code = EXIT_USAGE
    code = "lock-file"


class StaleLockError(LockFileError):
    """pylock.toml no longer fits pyproject.toml (``lock --check``'s reasons in *reasons*).

    ``pull`` and ``build`` refuse such a lock unless told ``frozen``, as uv's
    ``--locked`` and ``--frozen`` do: they never re-lock on their own.
    """

    exit_code = EXIT_FAILED
    code = "stale-lock"

    def __init__(self, message: str, reasons: Sequence[str] = (), **fields: Any) -> None:
        super().__init__(message, **fields)
        self.reasons = tuple(reasons)

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "reasons": list(self.reasons)}


class HashMismatchError(MonorepoError):
    """Downloaded bytes do not have the size or sha256 the lock records."""

    code = "hash-mismatch"


class ExtractError(MonorepoError):
    """An archive was refused by the safe extractor (names package and member)."""

    code = "extract"


class OverlayError(MonorepoError):
    """An overlay repository is malformed or one of its patches does not apply."""

    exit_code = EXIT_USAGE
    code = "overlay"


class PullError(MonorepoError):
    """duni/ could not be brought in line with the lock (e.g. local edits)."""

    code = "pull"


class BuildError(MonorepoError):
    """duni/ cannot be built: bad input, missing system libraries, no build environment."""

    code = "build"


class StorageError(MonorepoError):
    """A file monorepo keeps (in duni/ or the cache) cannot be written or repaired."""

    code = "storage"


class DiskFullError(StorageError):
    """A write failed because the file system holding it is full or over quota.

    The message names the directory being written (duni/, the download cache, a
    temporary directory) and the file system's mount point, so the user knows which
    disk to clear: the archive or package being written is not at fault.
    """

    code = "disk-full"


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
