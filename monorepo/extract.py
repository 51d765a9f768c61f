"""Safe extraction of sdists into duni/ (PEP 721 plus our own limits).

An sdist is untrusted input that ``pull`` unpacks into a tree people build and
commit, so extraction is all-or-nothing and never writes outside its destination:

1. **Scan first.**  Every member is checked before a single byte is written:
   absolute paths, ``..`` components, backslashes, device/fifo members, duplicate
   names (after normalisation), members below a file or symlink, symlinks whose
   target leaves the tree (resolved through the archive's other symlinks, not just
   lexically, which is what the tarfile data-filter bypasses of 2025 exploited),
   hard links to anything but an earlier regular file, and the :class:`Limits` on
   member count, declared uncompressed size and compression ratio.  The counts are
   enforced while the member list is read, so a bomb is refused at its first
   oversized header rather than after decompressing it.
2. **Write the checked plan into a staging directory** beside the destination
   (``.tmp-<name>-<random>``), with size checks on the bytes actually read for zip
   (header sizes are not trusted).  The single top-level directory of the sdist is
   stripped.  The second layer is structural (:class:`_Writer`): only planned
   relative paths, directories the writer made itself, files opened with
   ``O_NOFOLLOW``, and symlinks created last, so nothing is written through a link.
   This replaces tarfile's ``"data"`` filter, whose ``realpath`` of every member was
   most of the extraction time, and it checks the same things (PEP 721).  A gzip
   stream is decompressed once, into memory (up to a limit), for both steps.
   Every file is hashed while written: the stamps returned spare the tree hash a
   second read.
3. **Rename** the staging directory to the destination.  On any failure the
   staging directory is removed: no half-extracted tree is ever left behind.

Permissions are normalised the way the data filter intends, but independent of
the umask: files 0o755 when any executable bit was set, else 0o644; directories
0o755.  Owners and special bits are dropped.  Hard links are extracted as copies so
that patching one path can never edit another.  Empty directories are kept.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import lzma
import os
import pickle
import queue
import shutil
import stat
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Literal, cast

from monorepo import tarscan, workerproc
from monorepo.errors import ExtractError, MonorepoError, disk_full
from monorepo.treehash import Stamp, file_stamp
from monorepo.workerproc import WorkerLost

RawKind = Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "other"]

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")
_MAX_LINK_TARGET = 4096
_MAX_SYMLINK_DEPTH = 40
_CHUNK = 1024 * 1024
_PLANNED_KINDS: dict[str, Literal["file", "dir", "symlink", "hardlink"]] = {
    "file": "file",
    "dir": "dir",
    "symlink": "symlink",
    "hardlink": "hardlink",
}


class _SymlinkLoop(Exception):
    """Raised by :func:`_resolve` past the kernel's link depth (ELOOP)."""


@dataclass(frozen=True)
class Limits:
    """Caps that make a decompression bomb or a member flood fail fast.

    Defaults are far above any real sdist; ``max_ratio`` is uncompressed bytes per
    byte of archive (gzip of ordinary source code stays well under 20).
    """

    max_members: int = 100_000
    max_total_size: int = 2 * 1024**3
    max_ratio: float = 200.0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class RawMember:
    """A member as an archive format describes it, before any checking."""

    name: str
    kind: RawKind
    size: int = 0
    mode: int = 0o644
    link: str = ""
    """Symlink target, or for a hard link the archive name of its target."""


@dataclass(frozen=True)
class PlannedMember:
    """A checked member: where it goes relative to the destination, and as what."""

    original: str
    rel: str
    """Path below the stripped top-level directory; "" for the top directory itself."""
    kind: Literal["file", "dir", "symlink", "hardlink", "duplicate"]
    size: int
    executable: bool
    link: str
    """Symlink target as stored, or the ``rel`` of a hard link's target file."""


def _mode_for(executable: bool) -> int:
    return 0o755 if executable else 0o644


@dataclass
class Planner:
    """The checks of step 1, fed member by member so limits apply while reading.

    Pure: it sees member descriptions only, never the file system, so every rule
    can be tested without building an archive.
    """

    package: str
    archive_name: str
    archive_size: int
    limits: Limits = DEFAULT_LIMITS
    members: list[PlannedMember] = field(default_factory=list, init=False)
    _top: str | None = field(default=None, init=False)
    _top_member: str = field(default="", init=False)
    _by_rel: dict[str, PlannedMember] = field(default_factory=dict, init=False)
    _total: int = field(default=0, init=False)

    def refuse(self, member: str, reason: str) -> ExtractError:
        """The one message shape every refusal uses: package, archive, member, reason.

        The closing advice is the same for every rule because the remedy is: this file
        must not be unpacked, so another version or an overlay's replacement source is
        needed.
        """
        return ExtractError(
            f"{self.package}: refusing {self.archive_name}: member '{member}' {reason}."
            " Nothing was extracted; lock another version, or give the package a"
            " replacement source in an overlay"
        )

    def _components(self, member: str, name: str, what: str) -> list[str]:
        if not name:
            raise self.refuse(member, f"has an empty {what}")
        if "\0" in name:
            raise self.refuse(member, f"has a NUL byte in its {what}")
        if name.startswith("/"):
            raise self.refuse(member, f"has an absolute {what}, which would leave the tree")
        if "\\" in name:
            raise self.refuse(
                member, f"has a backslash in its {what}, which is a separator on Windows"
            )
        parts = [c for c in name.split("/") if c not in ("", ".")]
        if ".." in parts:
            raise self.refuse(
                member, f"has a '..' component in its {what}, which would leave the tree"
            )
        return parts

    def add(self, raw: RawMember) -> PlannedMember:
        """Check one member against everything knowable so far, and record it."""
        name = raw.name
        if len(self.members) >= self.limits.max_members:
            raise self.refuse(
                name, f"exceeds the limit of {self.limits.max_members} members per archive"
            )
        parts = self._components(name, name, "path")
        if raw.kind in ("chardev", "blockdev", "fifo", "other"):
            described = {
                "chardev": "is a character device",
                "blockdev": "is a block device",
                "fifo": "is a fifo (named pipe)",
                "other": "has a file type other than file, directory or link",
            }[raw.kind]
            raise self.refuse(name, f"{described}, which an sdist must not contain")
        if raw.kind == "file":
            self._count_size(name, raw.size)
        if not parts:
            if raw.kind != "dir":
                raise self.refuse(name, "names the archive root but is not a directory")
            return self._record(PlannedMember(name, "", "dir", 0, False, ""), skip=True)
        top, rel = parts[0], "/".join(parts[1:])
        if self._top is None:
            self._top, self._top_member = top, name
        elif top != self._top:
            raise self.refuse(
                name,
                f"is under the top-level directory '{top}' but '{self._top_member}' is under"
                f" '{self._top}'; an sdist holds exactly one top-level directory",
            )
        if not rel:
            if raw.kind != "dir":
                raise self.refuse(
                    name,
                    "is the archive's top-level entry but not a directory; an sdist"
                    " holds exactly one top-level directory",
                )
            return self._record(PlannedMember(name, "", "dir", 0, False, ""), skip=True)
        earlier = self._by_rel.get(rel)
        if (
            earlier is not None
            and earlier.kind == "file"
            and raw.kind == "file"
            and earlier.size == raw.size
        ):
            # Real sdists (pyarrow's LICENSE.txt) repeat a file verbatim.  Tolerated only
            # if the bytes are identical, which the extractor checks: never "last wins".
            return self._record(
                PlannedMember(name, rel, "duplicate", raw.size, False, rel), skip=True
            )
        if rel in self._by_rel:
            raise self.refuse(
                name,
                f"is a duplicate of '{self._by_rel[rel].original}' (same path once normalised)",
            )
        link = raw.link
        if raw.kind == "symlink":
            if not link:
                raise self.refuse(name, "is a symlink with an empty target")
            if "\0" in link:
                raise self.refuse(name, "is a symlink whose target contains a NUL byte")
            if link.startswith("/"):
                raise self.refuse(name, f"is a symlink to the absolute path '{link}'")
        elif raw.kind == "hardlink":
            link = self._hardlink_target(name, raw.link)
        kind = _PLANNED_KINDS[raw.kind]
        planned = PlannedMember(
            name, rel, kind, raw.size if kind == "file" else 0, bool(raw.mode & 0o111), link
        )
        return self._record(planned)

    def _count_size(self, name: str, size: int) -> None:
        self._total += max(size, 0)
        if self._total > self.limits.max_total_size:
            raise self.refuse(
                name,
                f"brings the uncompressed size to {self._total} bytes, over the limit of"
                f" {self.limits.max_total_size}",
            )
        ratio = self._total / max(self.archive_size, 1)
        if ratio > self.limits.max_ratio:
            raise self.refuse(
                name,
                f"brings the uncompressed size to {self._total} bytes, {ratio:.0f} times the"
                f" archive's {self.archive_size} bytes, over the limit of"
                f" {self.limits.max_ratio:g} (a decompression bomb?)",
            )

    def _hardlink_target(self, name: str, target: str) -> str:
        parts = self._components(name, target, "hard link target")
        if not parts or parts[0] != self._top:
            raise self.refuse(name, f"is a hard link to '{target}', outside the tree")
        rel = "/".join(parts[1:])
        found = self._by_rel.get(rel)
        if found is None or found.kind not in ("file", "hardlink"):
            raise self.refuse(
                name,
                f"is a hard link to '{target}', which is not an earlier regular file in the"
                " archive",
            )
        return found.link if found.kind == "hardlink" else rel

    def _record(self, planned: PlannedMember, *, skip: bool = False) -> PlannedMember:
        self.members.append(planned)
        if not skip:
            self._by_rel[planned.rel] = planned
        return planned

    def finish(self) -> list[PlannedMember]:
        """The whole-archive checks, once every member is known; returns the plan."""
        if self._top is None:
            raise ExtractError(
                f"{self.package}: refusing {self.archive_name}: it has no top-level directory"
                " (no members); the sdist is empty or damaged"
            )
        # Links first: an escaping link is the cause, a member below it the symptom.
        links = {p.rel: p.link for p in self._by_rel.values() if p.kind == "symlink"}
        for planned in self._by_rel.values():
            if planned.kind == "symlink":
                self._check_symlink(planned, links)
        for planned in self._by_rel.values():
            self._check_ancestors(planned)
        return self.members

    def _check_ancestors(self, planned: PlannedMember) -> None:
        parts = planned.rel.split("/")
        for i in range(1, len(parts)):
            ancestor = self._by_rel.get("/".join(parts[:i]))
            if ancestor is not None and ancestor.kind != "dir":
                what = "a symlink" if ancestor.kind == "symlink" else "a file"
                raise self.refuse(
                    planned.original,
                    f"lies under '{ancestor.original}', which is {what}, not a directory",
                )

    def _check_symlink(self, planned: PlannedMember, links: dict[str, str]) -> None:
        parent = planned.rel.split("/")[:-1]
        try:
            inside = _resolve(parent, planned.link, links, 0) is not None
        except _SymlinkLoop:
            inside = False
            reason = "is part of a symlink loop"
        else:
            reason = f"is a symlink to '{planned.link}', which leaves the extracted tree"
        if not inside:
            raise self.refuse(planned.original, reason)


def _resolve(base: list[str], target: str, links: dict[str, str], depth: int) -> list[str] | None:
    """Where *target*, relative to directory *base*, lands: None if it leaves the root.

    Follows the archive's own symlinks the way the kernel would once they all exist,
    so ``x -> d/..`` with ``d -> .`` is seen to escape even though it looks harmless
    lexically.  Raises _SymlinkLoop past 40 links (the kernel's ELOOP).
    """
    if depth > _MAX_SYMLINK_DEPTH:
        raise _SymlinkLoop(target)
    if target.startswith("/"):
        return None
    stack = list(base)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        key = "/".join(stack)
        if key in links:
            resolved = _resolve(stack[:-1], links[key], links, depth + 1)
            if resolved is None:
                return None
            stack = resolved
    return stack


FileStamps = dict[str, tuple[Stamp, str]]
"""For each regular file written, its stat stamp and sha256: the form of
:func:`monorepo.treehash.scan_tree`'s *stamps*, so hashing the new tree reads no file back."""


def extract_sdist(
    archive: Path,
    dest: Path,
    *,
    package: str,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
) -> FileStamps:
    """Unpack *archive*'s single top-level directory as *dest*, or refuse and leave nothing.

    *dest* must not exist; its parent is created if needed.  *name* is the archive's
    file name when the path does not end with it (a content-addressed store entry):
    its suffix picks the format and messages use it.  Returns the stamp and sha256 of
    every regular file written (hashed from the bytes in hand), which
    ``scan_tree(dest, stamps=...)`` turns into the tree's entries without reading the
    files again.  Raises :class:`~monorepo.errors.ExtractError` naming the package,
    archive and member, or :class:`~monorepo.errors.DiskFullError` naming the directory
    when a write fails for want of space (the archive is not at fault then).
    """
    source = _Archive(archive, name if name is not None else archive.name, package, limits)
    kind = _archive_kind(source)
    try:
        source.size = archive.stat().st_size
    except OSError as e:
        raise ExtractError(
            f"{package}: cannot read {source.name} ({e.strerror}); run 'monorepo pull' again"
            " to fetch it"
        ) from e
    if os.path.lexists(dest):
        raise ExtractError(
            f"{package}: cannot extract {source.name} into {dest}: it already exists; remove"
            " it first (monorepo pull replaces directories itself)"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    except OSError as e:
        raise _cannot_write(source, dest, e) from e
    try:
        stamps = (_extract_zip if kind == "zip" else _extract_tar)(source, staging)
        os.rename(staging, dest)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise _cannot_write(source, dest, e) from e
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return stamps


@dataclass
class _Archive:
    """The archive being extracted: where it is, what it is called, for whom, the limits."""

    path: Path
    name: str
    package: str
    limits: Limits
    size: int = 0

    def planner(self) -> Planner:
        return Planner(self.package, self.name, self.size, self.limits)


def _cannot_write(archive: _Archive, dest: Path, error: OSError) -> MonorepoError:
    full = disk_full(error, dest.parent, what=f"{archive.package}: cannot extract {archive.name}")
    if full is not None:
        return full
    return ExtractError(
        f"{archive.package}: cannot extract {archive.name} into {dest}: {error}; check the"
        f" free space and permissions of {dest.parent}"
    )


def _archive_kind(archive: _Archive) -> Literal["tar", "zip"]:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    raise ExtractError(
        f"{archive.package}: refusing {archive.name}: not a supported sdist archive; expected"
        " .tar.gz, .tar.bz2, .tar.xz, .tar or .zip"
    )


def _unreadable(archive: _Archive, error: BaseException) -> ExtractError:
    return ExtractError(
        f"{archive.package}: refusing {archive.name}: it is not a readable archive ({error});"
        " delete it from the cache (or the project) and run 'monorepo pull' again"
    )


_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)


class _Writer:
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
        mode = _mode_for(executable)
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
        except (*_READ_ERRORS, OSError) as e:
            raise self._failed(planned, e) from e
        self.stamps[rel] = (file_stamp(st), digest.hexdigest())

    def duplicate(self, planned: PlannedMember, read: Callable[[], bytes | memoryview]) -> None:
        """A repeated member must be byte-identical to the one already written."""
        try:
            same = hashlib.sha256(read()).hexdigest() == self.stamps[planned.rel][1]
        except (*_READ_ERRORS, OSError) as e:
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


def _tar_raw(info: tarfile.TarInfo) -> RawMember:
    kind: RawKind
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym():
        kind = "symlink"
    elif info.islnk():
        kind = "hardlink"
    elif info.ischr():
        kind = "chardev"
    elif info.isblk():
        kind = "blockdev"
    elif info.isfifo():
        kind = "fifo"
    else:
        kind = "other"
    return RawMember(info.name, kind, info.size, info.mode, info.linkname)


_GZIP_MAGIC = b"\x1f\x8b"
_IN_MEMORY_LIMIT = 256 * 1024 * 1024
"""Decompressed tar streams up to this size are held in memory, so the archive is
decompressed once for both steps; larger ones are read twice from the file."""
_TAR_OVERHEAD = 16 * 1024 * 1024


class _ReadAgain(Exception):
    """Reading the in-memory copy failed: read the file itself, which words the error."""


def _gunzip(archive: Path, limit: int) -> bytes | None:
    """The decompressed tar stream of a gzip archive, or None when it is not one, is
    damaged or exceeds *limit* (then the archive is read the ordinary way, which refuses
    or reports it exactly as it always did)."""
    try:
        data = archive.read_bytes()
    except OSError:
        return None
    if not data.startswith(_GZIP_MAGIC):
        return None
    out: list[bytes] = []
    total = 0
    inflate, errors = _inflate_library()
    try:
        while True:  # one gzip member after another, as GzipFile reads them
            # One call per member, capped one byte past the limit: the output is made
            # once, where 16 MiB steps joined at the end cost a fifth more time.
            inflater = inflate.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, limit - total + 1)
            total += len(chunk)
            if total > limit or not inflater.eof:
                return None  # over the limit, or truncated
            out.append(chunk)
            data = inflater.unused_data
            if not data.strip(b"\0"):
                break
            if not data.startswith(_GZIP_MAGIC):
                return None
    except errors:
        return None
    return out[0] if len(out) == 1 else b"".join(out)


@functools.cache
def _inflate_library() -> tuple[ModuleType, tuple[type[Exception], ...]]:
    """ISA-L's zlib interface where the ``isal`` package is installed, else zlib.

    Inflating is the largest single cost of a pull (the data set's 268 MB of sdists
    hold 900 MB of source) and ISA-L does it in about half of zlib's time, with the
    same ``decompressobj`` interface.  Its errors are not ``zlib.error``, hence the pair.
    """
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib, (zlib.error,)
    return isal_zlib, (zlib.error, cast(type[Exception], isal_zlib.error))  # typed as an instance


def _extract_tar(archive: _Archive, staging: Path) -> FileStamps:
    # A stream past what the limits allow goes the slow way, which refuses it at its
    # first oversized header; the allowance covers tar headers and padding.
    limits = archive.limits
    allowed = min(_IN_MEMORY_LIMIT, int(archive.size * limits.max_ratio) + _TAR_OVERHEAD)
    stream = _gunzip(archive.path, allowed)
    if stream is not None:
        # The usual sdist's headers are read by tarscan, a fifth of tarfile's CPU; any
        # other archive (and every hostile one tarscan does not know) by tarfile.
        members = tarscan.scan(stream)
        if members is not None:
            return _write_tar(members, None, stream, archive, staging)
        try:
            tf = tarfile.open(fileobj=io.BytesIO(stream), mode="r:")  # noqa: SIM115
        except (*_READ_ERRORS, OSError):
            pass
        else:
            with tf:
                try:
                    return _write_tar(tf, tf, stream, archive, staging)
                except _ReadAgain:
                    pass
    try:
        tf = tarfile.open(archive.path, "r:*")  # noqa: SIM115 - closed by the with below
    except (*_READ_ERRORS, OSError) as e:
        raise _unreadable(archive, e) from e
    with tf:
        return _write_tar(tf, tf, None, archive, staging)


def _write_tar(
    members: Iterable[tarfile.TarInfo],
    tf: tarfile.TarFile | None,
    stream: bytes | None,
    archive: _Archive,
    staging: Path,
) -> FileStamps:
    """Plan every member, then write the plan.

    *members* are read from *tf*, or were read by :func:`tarscan.scan` (then *tf* is
    None).  *stream* is the whole decompressed tar when it is in memory: member data is
    then sliced out of it instead of read (and decompressed again) through tarfile.
    """
    planner = archive.planner()
    if tf is not None:
        tf.errorlevel = 2
    infos: list[tarfile.TarInfo] = []
    try:
        for info in members:
            planner.add(_tar_raw(info))
            infos.append(info)
    except (*_READ_ERRORS, OSError) as e:
        if stream is not None:
            raise _ReadAgain from e
        raise _unreadable(archive, e) from e
    plan = planner.finish()
    view = memoryview(stream) if stream is not None else None

    def read(info: tarfile.TarInfo) -> Iterator[bytes | memoryview]:
        if view is not None and info.sparse is None:
            start, end = info.offset_data, info.offset_data + info.size
            if end > len(view):
                raise tarfile.ReadError("unexpected end of data")
            yield view[start:end]
            return
        assert tf is not None  # tarscan reads only streams in memory
        member = tf.extractfile(info)
        if member is not None:
            with member:
                while chunk := member.read(_CHUNK):
                    yield chunk

    def read_all(info: tarfile.TarInfo) -> bytes | memoryview:
        return b"".join(read(info))

    writer = _Writer(staging, planner)
    files: dict[str, tarfile.TarInfo] = {}
    for planned, info in zip(plan, infos, strict=True):
        if not planned.rel:
            continue
        if planned.kind == "file":
            files[planned.rel] = info
            writer.file(planned, read(info), planned.executable, info.mtime)
        elif planned.kind == "dir":
            writer.directory(planned, info.mtime)
        elif planned.kind == "hardlink":
            # A copy of the target's data, mode and time, under the new name.
            source = files[planned.link]
            writer.file(planned, read(source), source.mode & 0o111 != 0, source.mtime)
        elif planned.kind == "symlink":
            writer.symlink(planned)
        else:
            writer.duplicate(planned, functools.partial(read_all, info))
    return writer.finish()


def _zip_kind(info: zipfile.ZipInfo) -> tuple[RawKind, int]:
    mode = info.external_attr >> 16 if info.create_system == 3 else 0
    fmt = stat.S_IFMT(mode)
    if info.is_dir() or fmt == stat.S_IFDIR:
        return "dir", 0o755
    if fmt == stat.S_IFLNK:
        return "symlink", 0o777
    if fmt in (0, stat.S_IFREG):
        return "file", mode & 0o777 if mode else 0o644
    if fmt == stat.S_IFCHR:
        return "chardev", 0
    if fmt == stat.S_IFBLK:
        return "blockdev", 0
    if fmt == stat.S_IFIFO:
        return "fifo", 0
    return "other", 0


def _read_capped(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    """Chunks of *stream*, reading at most one byte past *limit* so overruns are seen."""
    remaining = limit + 1
    while remaining > 0:
        chunk = stream.read(min(_CHUNK, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


def _extract_zip(archive: _Archive, staging: Path) -> FileStamps:
    planner = archive.planner()
    try:
        zf = zipfile.ZipFile(archive.path)
    except (*_READ_ERRORS, OSError) as e:
        raise _unreadable(archive, e) from e
    with zf:
        infos = zf.infolist()
        plan: list[PlannedMember] = []
        for info in infos:
            kind, mode = _zip_kind(info)
            if info.flag_bits & 0x1:
                raise planner.refuse(info.filename, "is encrypted")
            link = ""
            if kind == "symlink":
                link = _zip_link_target(zf, info, planner)
            plan.append(planner.add(RawMember(info.filename, kind, info.file_size, mode, link)))
        planner.finish()
        writer = _Writer(staging, planner)
        counter = _ZipCounter(planner, archive.size)
        for planned, info in zip(plan, infos, strict=True):
            if planned.kind == "duplicate":
                writer.duplicate(planned, functools.partial(zf.read, info))
            elif planned.kind == "dir" and planned.rel:
                writer.directory(planned, None)
            elif planned.kind == "symlink":
                writer.symlink(planned)
            elif planned.kind == "file" and planned.rel:
                writer.file(planned, counter.chunks(zf, info, planned), planned.executable, None)
        return writer.finish()


def _zip_link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo, planner: Planner) -> str:
    try:
        with zf.open(info) as stream:
            data = b"".join(_read_capped(stream, _MAX_LINK_TARGET))
    except (*_READ_ERRORS, OSError) as e:
        raise planner.refuse(info.filename, f"could not be read: {e}") from e
    if len(data) > _MAX_LINK_TARGET:
        raise planner.refuse(info.filename, "is a symlink with an over-long target")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise planner.refuse(info.filename, "is a symlink whose target is not UTF-8") from e


@dataclass
class _ZipCounter:
    """Counts the bytes a zip really inflates to, since its headers are not trusted."""

    planner: Planner
    archive_size: int
    total: int = 0

    def chunks(
        self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, planned: PlannedMember
    ) -> Iterator[bytes]:
        limits = self.planner.limits
        written = 0
        with zf.open(info) as stream:
            for chunk in _read_capped(stream, info.file_size):
                written += len(chunk)
                self.total += len(chunk)
                if written > info.file_size:
                    raise self.planner.refuse(
                        planned.original,
                        f"expands beyond its declared {info.file_size} bytes",
                    )
                if self.total > limits.max_total_size:
                    raise self.planner.refuse(
                        planned.original,
                        f"brings the uncompressed size over the limit of {limits.max_total_size}"
                        " bytes",
                    )
                if self.total / max(self.archive_size, 1) > limits.max_ratio:
                    raise self.planner.refuse(
                        planned.original,
                        f"brings the uncompressed size over {limits.max_ratio:g} times the"
                        " archive's size (a decompression bomb?)",
                    )
                yield chunk


# ------------------------------------------------------------------ worker processes

_Request = tuple[str, str, str, Limits, "str | None"]


class _Worker:
    """One worker interpreter serving extractions over its stdin and stdout."""

    def __init__(self) -> None:
        self.process = workerproc.spawn("monorepo.extract", "_serve")
        if self._exchange(None) != "ready":
            self.stop()
            raise WorkerLost("no handshake")

    def _exchange(self, request: _Request | None) -> object:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            if request is not None:
                workerproc.send(stdin.fileno(), request)
            return workerproc.receive(stdout.fileno())
        except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
            raise WorkerLost(str(e)) from e

    def call(self, request: _Request) -> FileStamps:
        reply = self._exchange(request)
        if not isinstance(reply, tuple) or len(reply) != 2:
            raise WorkerLost(f"unexpected reply {reply!r}")
        status, value = reply
        if status == "error" and isinstance(value, BaseException):
            raise value
        if status != "ok" or not isinstance(value, dict):
            raise WorkerLost(f"unexpected reply {reply!r}")
        return value

    def stop(self) -> None:
        workerproc.stop(self.process)


def _serve() -> None:
    """The worker's loop: one extraction per request until its stdin closes."""
    stdin, stdout = workerproc.serving_fds()
    workerproc.send(stdout, "ready")
    while True:
        try:
            request = cast(_Request, workerproc.receive(stdin))
        except EOFError:
            return
        archive, dest, package, limits, name = request
        reply: tuple[str, object]
        try:
            reply = (
                "ok",
                extract_sdist(Path(archive), Path(dest), package=package, limits=limits, name=name),
            )
        except Exception as error:  # sent back, and raised there
            reply = ("error", error if workerproc.picklable(error) else ExtractError(str(error)))
        workerproc.send(stdout, reply)


class ExtractorPool:
    """:func:`extract_sdist` in worker processes, so sdists unpack on every core at once.

    Planning and writing a tar is Python work under the GIL (tarfile's header parsing
    above all), so threads extracting several sdists mostly wait for each other.  The
    workers are plain interpreters started with ``python -c`` rather than
    multiprocessing: nothing of the caller's ``__main__`` is imported again and no
    threaded process is forked.  Each serves one extraction at a time over a pipe;
    the result (or the :class:`~monorepo.errors.ExtractError`) is the same as in-thread.
    Archives smaller than *min_size* bytes are extracted in the calling thread, where a
    round trip costs more than it saves, and so is everything once a worker could not
    be started or was lost.  Thread safe; :meth:`close` stops the workers.
    """

    def __init__(self, processes: int | None = None, *, min_size: int = 256 * 1024) -> None:
        self.processes = processes if processes is not None else (os.cpu_count() or 1)
        self.min_size = min_size
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._in_thread = False
        self.started = 0
        """How many worker processes were started (for diagnostics and tests)."""

    def __enter__(self) -> ExtractorPool:
        return self

    def prestart(self) -> None:
        """Start the worker processes now, for a caller that knows archives are coming:
        their interpreters start up while it downloads, not when the first archive is
        ready (about a tenth of a second each)."""
        if self.processes > 0 and not self._in_thread:
            workerproc.prestart("monorepo.extract", "_serve", self.processes - len(self._workers))

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extract(
        self,
        archive: Path,
        dest: Path,
        *,
        package: str,
        limits: Limits = DEFAULT_LIMITS,
        name: str | None = None,
    ) -> FileStamps:
        """:func:`extract_sdist`, in a worker when the archive is large enough."""
        try:
            large = archive.stat().st_size >= self.min_size
        except OSError:
            large = False  # extract_sdist words the error
        worker = self._acquire() if large else None
        if worker is not None:
            request: _Request = (os.fspath(archive), os.fspath(dest), package, limits, name)
            try:
                stamps = worker.call(request)
            except WorkerLost:
                self._lose(worker)
                if os.path.lexists(dest):  # the worker died after its final rename
                    shutil.rmtree(dest, ignore_errors=True)
            except BaseException:
                self._idle.put(worker)
                raise
            else:
                self._idle.put(worker)
                return stamps
        return extract_sdist(archive, dest, package=package, limits=limits, name=name)

    def _acquire(self) -> _Worker | None:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                worker = None
            if worker is not None:
                return worker
            with self._lock:
                if self._in_thread or self.processes < 1:
                    return None
                if len(self._workers) < self.processes:
                    try:
                        worker = _Worker()
                    except WorkerLost:
                        self._in_thread = True
                        return None
                    self._workers.append(worker)
                    self.started += 1
                    return worker
            worker = self._idle.get()
            if worker is not None:
                return worker
            # None: a worker was lost, so there is room to start another.

    def _lose(self, worker: _Worker) -> None:
        worker.stop()
        with self._lock:
            self._workers.remove(worker)
            self._in_thread = True  # a worker that dies once is likely to die again
        self._idle.put(None)

    def close(self) -> None:
        """Stop every worker (each finishes its current extraction first)."""
        with self._lock:
            workers, self._workers = self._workers, []
            self._in_thread = True
        for worker in workers:
            worker.stop()
        workerproc.stop_spares("monorepo.extract", "_serve")
        self._idle.put(None)
