"""Where a checked plan goes (step 2): into a staging directory, or a few members into memory."""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from monorepo._core.fstree import Stamp, file_stamp
from monorepo.errors import MonorepoError, disk_full
from monorepo.extract.rules import PlannedMember, Planner, file_mode

_MAX_READ = 64 * 1024 * 1024
"""The most bytes :func:`read_archive` and :func:`read_zip` return for one member: they
hold it in memory, and what they are asked for (PKG-INFO, METADATA) is a few KB."""


FileStamps = dict[str, tuple[Stamp, str]]
"""For each regular file written, its stat stamp and sha256: the form of
:func:`monorepo.sources.treehash.scan_tree`'s *stamps*, so hashing the new tree reads no file back."""


@dataclass(frozen=True)
class Listing:
    """What :func:`read_archive` and :func:`read_zip` found: the checked plan and the
    contents of the members asked for."""

    top: str
    """The sdist's top-level directory ("" for the ``tree`` layout)."""
    members: tuple[PlannedMember, ...]
    contents: dict[str, bytes]
    """``rel`` -> bytes of each member asked for that is a file (or a hard link to one)."""


Select = Callable[[Sequence[PlannedMember]], Collection[str]]
"""Given the checked plan, the ``rel`` paths whose contents to read."""


READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class Sink(Protocol[_T_co]):
    """Where a checked plan goes, member by member: :class:`Writer` (to disk) or
    :class:`Collector` (the few members a caller asked for)."""

    def file(
        self,
        planned: PlannedMember,
        chunks: Iterable[bytes | memoryview],
        executable: bool,
        mtime: float | None,
    ) -> None: ...

    def directory(self, planned: PlannedMember, mtime: float | None) -> None: ...

    def symlink(self, planned: PlannedMember) -> None: ...

    def duplicate(self, planned: PlannedMember, read: Callable[[], bytes | memoryview]) -> None: ...

    def finish(self) -> _T_co: ...


class Collector:
    """A sink that writes nothing and keeps the contents of the members asked for.

    The others are never read (nor, from a zip, inflated); every member was checked.
    """

    def __init__(self, want: Collection[str] | Select, planner: Planner) -> None:
        self.planner = planner
        self.want = want if not callable(want) else None
        self.select = want if callable(want) else None
        self.contents: dict[str, bytes] = {}

    def _wanted(self) -> Collection[str]:
        if self.want is None:
            assert self.select is not None
            self.want = set(self.select(self.planner.members))
        return self.want

    def file(
        self,
        planned: PlannedMember,
        chunks: Iterable[bytes | memoryview],
        executable: bool,
        mtime: float | None,
    ) -> None:
        if planned.rel not in self._wanted():
            return
        if planned.size > _MAX_READ:
            raise self.planner.refuse(
                planned.original,
                f"is {planned.size} bytes, more than the {_MAX_READ} read into memory",
            )
        try:
            self.contents[planned.rel] = b"".join(chunks)
        except (*READ_ERRORS, OSError) as e:
            raise self.planner.refuse(planned.original, f"could not be read: {e}") from e

    def directory(self, planned: PlannedMember, mtime: float | None) -> None:
        pass

    def symlink(self, planned: PlannedMember) -> None:
        pass

    def duplicate(self, planned: PlannedMember, read: Callable[[], bytes | memoryview]) -> None:
        """A repeated member asked for must repeat the same bytes: never "last wins"."""
        if planned.rel not in self.contents:
            return
        try:
            same = bytes(read()) == self.contents[planned.rel]
        except (*READ_ERRORS, OSError) as e:
            raise self.planner.refuse(planned.original, f"could not be read: {e}") from e
        if not same:
            raise self.planner.refuse(
                planned.original, "is a duplicate of an earlier member with different content"
            )

    def finish(self) -> Listing:
        self._wanted()  # a selection sees the plan even when no member was read
        return Listing(self.planner.top, tuple(self.planner.members), self.contents)


class Writer:
    """Step 2: writes a checked plan into the staging directory, and only there.

    In place of a per-member second check (tarfile's data filter resolves every
    member's path with ``realpath``, which made it most of the extraction time), the
    writer makes escaping impossible by construction: every path is a planned
    relative path without ``..``, directories are made by the writer itself, files
    are opened with ``O_NOFOLLOW``, and symlinks are created only by :meth:`finish`,
    after every file and directory, so nothing is ever written through a link.
    """

    def __init__(self, root: Path, planner: Planner) -> None:
        self.root = os.fspath(root)
        self.planner = planner
        self.dirs: set[str] = {""}
        self.made: list[str] = [""]
        self.links: list[PlannedMember] = []
        self.stamps: FileStamps = {}

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _parents(self, rel: str) -> None:
        parent = rel.rpartition("/")[0]
        missing: list[str] = []
        while parent not in self.dirs:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for directory in reversed(missing):
            self._mkdir(directory)

    def _mkdir(self, rel: str) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.path(rel), 0o755)
        self.dirs.add(rel)
        self.made.append(rel)

    def directory(self, planned: PlannedMember, mtime: float | None) -> None:
        try:
            self._parents(planned.rel)
            if planned.rel not in self.dirs:
                self._mkdir(planned.rel)
            if mtime is not None:
                _set_mtime(self.path(planned.rel), mtime)
        except OSError as e:
            raise self._failed(planned, e) from e

    def _failed(self, planned: PlannedMember, error: BaseException) -> MonorepoError:
        """A write that failed for want of space is the disk's fault, not the archive's."""
        planner = self.planner
        what = f"{planner.package}: cannot extract {planner.archive_name}"
        full = disk_full(error, Path(self.root).parent, what=what)
        if full is not None:
            return full
        return planner.refuse(planned.original, f"could not be extracted: {error}")

    def file(
        self,
        planned: PlannedMember,
        chunks: Iterable[bytes | memoryview],
        executable: bool,
        mtime: float | None,
    ) -> None:
        """Write, hash and stamp one file; read errors and write errors are refusals."""
        rel = planned.rel
        mode = file_mode(executable)
        try:
            self._parents(rel)
            fd = os.open(self.path(rel), _WRITE_FLAGS, mode)
            try:
                digest = hashlib.sha256()
                for chunk in chunks:
                    digest.update(chunk)
                    _write_all(fd, chunk)
                if mtime is not None:
                    _set_mtime(fd, mtime)
                st = os.fstat(fd)
                if stat.S_IMODE(st.st_mode) != mode:  # the umask took bits away
                    os.fchmod(fd, mode)
                    st = os.fstat(fd)
            finally:
                os.close(fd)
        except (*READ_ERRORS, OSError) as e:
            raise self._failed(planned, e) from e
        self.stamps[rel] = (file_stamp(st), digest.hexdigest())

    def duplicate(self, planned: PlannedMember, read: Callable[[], bytes | memoryview]) -> None:
        """A repeated member must be byte-identical to the one already written."""
        try:
            same = hashlib.sha256(read()).hexdigest() == self.stamps[planned.rel][1]
        except (*READ_ERRORS, OSError) as e:
            raise self.planner.refuse(planned.original, f"could not be read: {e}") from e
        if not same:
            raise self.planner.refuse(
                planned.original, "is a duplicate of an earlier member with different content"
            )

    def symlink(self, planned: PlannedMember) -> None:
        self.links.append(planned)

    def finish(self) -> FileStamps:
        """Symlinks last, then directories 0o755 whatever the umask."""
        for planned in self.links:
            try:
                self._parents(planned.rel)
                os.symlink(planned.link, self.path(planned.rel))
            except OSError as e:
                raise self._failed(planned, e) from e
        for rel in self.made:
            os.chmod(self.path(rel), 0o755)
        return self.stamps


_WRITE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_TRUNC
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _set_mtime(target: int | str, mtime: float) -> None:
    """The archive's modification time, as tarfile sets it (same error text)."""
    try:
        os.utime(target, (mtime, mtime))
    except (OSError, OverflowError, ValueError) as e:
        raise tarfile.ExtractError("could not change modification time") from e
