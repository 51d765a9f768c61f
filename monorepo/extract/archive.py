"""The one extractor: every archive the tool opens is checked here, by one set of rules.

Sdists (``.tar.gz``, ``.tar.bz2``, ``.tar.xz``, ``.tar``, ``.zip``) unpacked into
duni/ by ``pull`` and into scratch trees by ``lock`` and ``verify``, sdists and wheels
read for their metadata, the wheels a cross build unpacks for its smoke test, and the
``data.tar`` of the Debian packages of a sysroot (:mod:`monorepo.sysroot`) are all
untrusted input.  Each goes through :class:`Planner`, under the same :class:`Limits`,
before a byte of it is written or handed to a caller:

1. **Scan first.**  Every member is checked before a single byte is written:
   absolute paths, ``..`` components, backslashes, device/fifo members, duplicate
   names (after normalisation), members below a file or symlink, symlinks whose
   target leaves the tree (resolved through the archive's other symlinks, not just
   lexically, which is what the tarfile data-filter bypasses of 2025 exploited),
   hard links to anything but an earlier regular file, and the :class:`Limits` on
   member count, uncompressed bytes and compression ratio (every member counts: a
   hard link is extracted as a copy, so it counts its target's bytes), nesting depth
   and path length.  The limits are enforced while the member list is read, so a
   bomb is refused at its first oversized header rather than after decompressing it,
   and a tree too deep for the walks that later hash, verify and remove it is never
   made.
2. **Write the checked plan into a staging directory** beside the destination
   (``.tmp-<name>-<random>``, made only once the whole plan passed), with size checks on the bytes actually read for zip
   (header sizes are not trusted).  The single top-level directory of an sdist is
   stripped.  The second layer is structural (:class:`_Writer`): only planned
   relative paths, directories the writer made itself, files opened with
   ``O_NOFOLLOW``, and symlinks created last, so nothing is written through a link.
   This replaces tarfile's ``"data"`` filter, whose ``realpath`` of every member was
   most of the extraction time, and it checks the same things (PEP 721).  A gzip
   stream is decompressed once, into memory (up to a limit), for both steps.
   Every file is hashed while written: the stamps returned spare the tree hash a
   second read.  (:func:`read_archive` and :func:`read_zip` run the same plan and
   return the few members asked for instead of writing anything.)
3. **Rename** the staging directory to the destination.  On any failure the
   staging directory is removed: no half-extracted tree is ever left behind.

Permissions are normalised the way the data filter intends, but independent of
the umask: files 0o755 when any executable bit was set, else 0o644; directories
0o755.  Owners and special bits are dropped.  Hard links are extracted as copies so
that patching one path can never edit another.  Empty directories are kept.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import hashlib
import importlib
import io
import lzma
import os
import pickle
import queue
import stat
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Literal, Protocol, TypeVar, cast

from monorepo._core.fstree import remove_tree
from monorepo._core.speed import workerproc
from monorepo._core.speed.workerproc import WorkerLost
from monorepo.errors import ExtractError, MonorepoError, disk_full
from monorepo.extract.speed import tarscan
from monorepo.sources.treehash import Stamp, file_stamp

__all__ = [
    "DEFAULT_LIMITS",
    "ExtractorPool",
    "FileStamps",
    "Layout",
    "Limits",
    "Listing",
    "PlannedMember",
    "Planner",
    "RawMember",
    "decompress",
    "extract_archive",
    "extract_sdist",
    "read_archive",
    "read_zip",
    "resolve_path",
    "tar_raw",
]

RawKind = Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "other"]
Layout = Literal["sdist", "tree"]
"""``sdist``: exactly one top-level directory, stripped.  ``tree``: paths kept as they are
(a wheel, a Debian package's data)."""

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")
_ZIP_SUFFIXES = (".zip", ".whl")
_MAX_LINK_TARGET = 4096
_MAX_SYMLINK_DEPTH = 40
_MAX_READ = 64 * 1024 * 1024
"""The most bytes :func:`read_archive` and :func:`read_zip` return for one member: they
hold it in memory, and what they are asked for (PKG-INFO, METADATA) is a few KB."""
_CHUNK = 1024 * 1024
_PLANNED_KINDS: dict[str, Literal["file", "dir", "symlink", "hardlink"]] = {
    "file": "file",
    "dir": "dir",
    "symlink": "symlink",
    "hardlink": "hardlink",
}
_SDIST_ADVICE = (
    "Nothing was extracted; lock another version, or give the package a replacement source"
    " in an overlay"
)


class _SymlinkLoop(Exception):
    """Raised by :func:`resolve_path` past the kernel's link depth (ELOOP)."""


@dataclass(frozen=True)
class Limits:
    """Caps that make a decompression bomb, a member flood or a pathological tree fail fast.

    Defaults are far above any real sdist (the 117 sdists of a large scientific set
    hold at most 12 levels and 153 bytes of path below their top directory);
    ``max_ratio`` is uncompressed bytes per byte of archive (gzip of ordinary source
    code stays well under 20).  Bytes count every member: a file its size, a hard link
    the size of the file it copies, a symlink its target's length.
    """

    max_members: int = 100_000
    max_total_size: int = 2 * 1024**3
    max_ratio: float = 200.0
    max_depth: int = 128
    """Path components of a member below the top directory (``a/b/c.py`` is 3)."""
    max_path_length: int = 1024
    """UTF-8 bytes of a member's path below the top directory."""


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
    """Path below the stripped top-level directory (the whole path for the ``tree``
    layout); "" for the top directory itself."""
    kind: Literal["file", "dir", "symlink", "hardlink", "duplicate"]
    size: int
    """Bytes it writes: a file's size, a hard link's target's size, else 0."""
    executable: bool
    link: str
    """Symlink target as stored, or the ``rel`` of a hard link's target file."""


def _mode_for(executable: bool) -> int:
    return 0o755 if executable else 0o644


def _shown(name: str) -> str:
    """A member name for a message: a hostile one can be thousands of characters long."""
    return name if len(name) <= 200 else f"{name[:120]}...{name[-60:]} ({len(name)} characters)"


@dataclass
class Planner:
    """The checks of step 1, fed member by member so limits apply while reading.

    Pure: it sees member descriptions only, never the file system, so every rule
    can be tested without building an archive.  *archive_size* None means the
    archive's size is unknown (a member list checked on its own): the ratio is then
    not checked.  *advice* closes every refusal: what the user can do about it.
    """

    package: str
    archive_name: str
    archive_size: int | None
    limits: Limits = DEFAULT_LIMITS
    layout: Layout = "sdist"
    advice: str = _SDIST_ADVICE
    members: list[PlannedMember] = field(default_factory=list, init=False)
    _top: str | None = field(default=None, init=False)
    _top_member: str = field(default="", init=False)
    _by_rel: dict[str, PlannedMember] = field(default_factory=dict, init=False)
    _total: int = field(default=0, init=False)

    @property
    def top(self) -> str:
        """The sdist's top-level directory ("" before the first member, or for a tree)."""
        return self._top or ""

    def refuse(self, member: str, reason: str) -> ExtractError:
        """The one message shape every refusal uses: package, archive, member, reason.

        The closing advice is the same for every rule because the remedy is: this file
        must not be unpacked, so another version or an overlay's replacement source is
        needed.
        """
        return ExtractError(
            f"{self.package}: refusing {self.archive_name}: member '{_shown(member)}'"
            f" {reason}. {self.advice}"
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
            raise self.refuse(name, f"{described}, which an archive must not contain")
        if raw.kind == "file":
            self._count_size(name, raw.size)
        if not parts:
            if raw.kind != "dir":
                raise self.refuse(name, "names the archive root but is not a directory")
            return self._record(PlannedMember(name, "", "dir", 0, False, ""), skip=True)
        if self.layout == "tree":
            below = parts
        else:
            top, below = parts[0], parts[1:]
            if self._top is None:
                self._top, self._top_member = top, name
            elif top != self._top:
                raise self.refuse(
                    name,
                    f"is under the top-level directory '{top}' but '{self._top_member}' is"
                    f" under '{self._top}'; an sdist holds exactly one top-level directory",
                )
            if not below:
                if raw.kind != "dir":
                    raise self.refuse(
                        name,
                        "is the archive's top-level entry but not a directory; an sdist"
                        " holds exactly one top-level directory",
                    )
                return self._record(PlannedMember(name, "", "dir", 0, False, ""), skip=True)
        rel = "/".join(below)
        self._check_shape(name, below, rel)
        earlier = self._by_rel.get(rel)
        if earlier is not None and earlier.kind == raw.kind == "dir":
            # A directory listed twice is harmless: nothing is written twice.
            return self._record(PlannedMember(name, rel, "dir", 0, False, ""), skip=True)
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
        if earlier is not None:
            raise self.refuse(
                name, f"is a duplicate of '{_shown(earlier.original)}' (same path once normalised)"
            )
        link = raw.link
        size = raw.size if raw.kind == "file" else 0
        if raw.kind == "symlink":
            if not link:
                raise self.refuse(name, "is a symlink with an empty target")
            if "\0" in link:
                raise self.refuse(name, "is a symlink whose target contains a NUL byte")
            if link.startswith("/"):
                raise self.refuse(name, f"is a symlink to the absolute path '{_shown(link)}'")
            if len(link.encode("utf-8", "surrogateescape")) > _MAX_LINK_TARGET:
                raise self.refuse(name, "is a symlink with an over-long target")
            self._count_size(name, len(link))
        elif raw.kind == "hardlink":
            link, size = self._hardlink_target(name, raw.link)
            self._count_size(name, size, link_to=raw.link)
        kind = _PLANNED_KINDS[raw.kind]
        planned = PlannedMember(name, rel, kind, size, bool(raw.mode & 0o111), link)
        return self._record(planned)

    def _check_shape(self, name: str, parts: list[str], rel: str) -> None:
        """Depth and path length: the walks that later hash, verify and remove the tree
        (and every tool a user points at it) must be able to reach each path."""
        limits = self.limits
        if len(parts) > limits.max_depth:
            raise self.refuse(
                name,
                f"is nested {len(parts)} levels deep, over the limit of {limits.max_depth} levels",
            )
        if len(rel) * 4 <= limits.max_path_length:
            return  # nearly every path: short enough in any encoding, nothing to encode
        length = len(rel.encode("utf-8", "surrogateescape"))
        if length > limits.max_path_length:
            raise self.refuse(
                name,
                f"has a path of {length} bytes, over the limit of {limits.max_path_length} bytes",
            )

    def _count_size(self, name: str, size: int, *, link_to: str | None = None) -> None:
        self._total += max(size, 0)
        what = (
            f"is a hard link to '{_shown(link_to)}', extracted as a copy of its {size} bytes,"
            " which brings"
            if link_to is not None
            else "brings"
        )
        if self._total > self.limits.max_total_size:
            raise self.refuse(
                name,
                f"{what} the uncompressed size to {self._total} bytes, over the limit of"
                f" {self.limits.max_total_size}",
            )
        if self.archive_size is None:
            return
        ratio = self._total / max(self.archive_size, 1)
        if ratio > self.limits.max_ratio:
            raise self.refuse(
                name,
                f"{what} the uncompressed size to {self._total} bytes, {ratio:.0f} times the"
                f" archive's {self.archive_size} bytes, over the limit of"
                f" {self.limits.max_ratio:g} (a decompression bomb?)",
            )

    def _hardlink_target(self, name: str, target: str) -> tuple[str, int]:
        """The ``rel`` of the file a hard link copies, and that file's size."""
        parts = self._components(name, target, "hard link target")
        if self.layout == "tree":
            below = parts
        elif not parts or parts[0] != self._top:
            raise self.refuse(name, f"is a hard link to '{_shown(target)}', outside the tree")
        else:
            below = parts[1:]
        found = self._by_rel.get("/".join(below))
        if found is None or found.kind not in ("file", "hardlink"):
            raise self.refuse(
                name,
                f"is a hard link to '{_shown(target)}', which is not an earlier regular file"
                " in the archive",
            )
        return (found.link if found.kind == "hardlink" else found.rel), found.size

    def _record(self, planned: PlannedMember, *, skip: bool = False) -> PlannedMember:
        self.members.append(planned)
        if not skip:
            self._by_rel[planned.rel] = planned
        return planned

    def finish(self) -> list[PlannedMember]:
        """The whole-archive checks, once every member is known; returns the plan."""
        if self._top is None and self.layout == "sdist":
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
                    f"lies under '{_shown(ancestor.original)}', which is {what}, not a directory",
                )

    def _check_symlink(self, planned: PlannedMember, links: dict[str, str]) -> None:
        parent = planned.rel.split("/")[:-1]
        try:
            inside = resolve_path(parent, planned.link, links) is not None
        except _SymlinkLoop:
            inside = False
            reason = "is part of a symlink loop"
        else:
            reason = f"is a symlink to '{_shown(planned.link)}', which leaves the extracted tree"
        if not inside:
            raise self.refuse(planned.original, reason)


def resolve_path(
    base: Sequence[str], target: str, links: Mapping[str, str] | None = None, depth: int = 0
) -> list[str] | None:
    """Where *target*, relative to directory *base*, lands: None if it leaves the root.

    Follows the archive's own symlinks (*links*: rel path -> target) the way the kernel
    would once they all exist, so ``x -> d/..`` with ``d -> .`` is seen to escape even
    though it looks harmless lexically; without *links* it is a lexical normalisation.
    Raises _SymlinkLoop past 40 links (the kernel's ELOOP).
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
        if links:
            key = "/".join(stack)
            if key in links:
                resolved = resolve_path(stack[:-1], links[key], links, depth + 1)
                if resolved is None:
                    return None
                stack = resolved
    return stack


FileStamps = dict[str, tuple[Stamp, str]]
"""For each regular file written, its stat stamp and sha256: the form of
:func:`monorepo.treehash.scan_tree`'s *stamps*, so hashing the new tree reads no file back."""


def extract_archive(
    archive: Path | bytes,
    dest: Path,
    *,
    package: str,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
    layout: Layout = "sdist",
    advice: str = _SDIST_ADVICE,
) -> FileStamps:
    """Unpack *archive* as *dest*, or refuse and leave nothing.

    *archive* is a file, or its bytes (then *name* is required).  With the ``sdist``
    *layout* its single top-level directory becomes *dest*; with ``tree`` its root does.
    *dest* must not exist; its parent is created if needed.  *name* is the archive's
    file name when the path does not end with it (a content-addressed store entry):
    its suffix picks the format and messages use it.  Returns the stamp and sha256 of
    every regular file written (hashed from the bytes in hand), which
    ``scan_tree(dest, stamps=...)`` turns into the tree's entries without reading the
    files again.  Raises :class:`~monorepo.errors.ExtractError` naming the package,
    archive and member, or :class:`~monorepo.errors.DiskFullError` naming the directory
    when a write fails for want of space (the archive is not at fault then).
    """
    source = _Archive.of(archive, name, package, limits, layout, advice)
    if os.path.lexists(dest):
        raise ExtractError(
            f"{package}: cannot extract {source.name} into {dest}: it already exists; remove"
            " it first (monorepo pull replaces directories itself)"
        )
    made: list[Path] = []

    def writer(planner: Planner) -> _Writer:
        # Only once the whole plan passed: a refused archive leaves not even an empty
        # staging directory (nor a changed mtime) behind.
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            made.append(Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent)))
        except OSError as e:
            raise _cannot_write(source, dest, e) from e
        return _Writer(made[0], planner)

    try:
        stamps = source.emit(writer)
        os.rename(made[0], dest)
    except OSError as e:
        for staging in made:
            remove_tree(staging, ignore_errors=True)
        raise _cannot_write(source, dest, e) from e
    except BaseException:
        for staging in made:
            remove_tree(staging, ignore_errors=True)
        raise
    return stamps


def extract_sdist(
    archive: Path | bytes,
    dest: Path,
    *,
    package: str,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
) -> FileStamps:
    """:func:`extract_archive` of an sdist: its single top-level directory becomes *dest*."""
    return extract_archive(archive, dest, package=package, limits=limits, name=name)


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


def read_archive(
    archive: Path | bytes,
    *,
    package: str,
    name: str | None = None,
    want: Collection[str] | Select = (),
    limits: Limits = DEFAULT_LIMITS,
    layout: Layout = "sdist",
    advice: str = _SDIST_ADVICE,
) -> Listing:
    """Check *archive* exactly as :func:`extract_archive` would, and read members of it.

    Nothing is written: an archive that extraction would refuse is refused here, with
    the same message, and otherwise the members named by *want* (``rel`` paths, or a
    function of the plan that returns them) are read, with their real sizes checked,
    up to 64 MiB each.  For a caller that needs one file of an sdist (its PKG-INFO)
    or of a wheel (its METADATA) and must not trust the rest of it either.
    """
    source = _Archive.of(archive, name, package, limits, layout, advice)
    return source.emit(functools.partial(_Collector, want))


def read_zip(
    zf: zipfile.ZipFile,
    *,
    package: str,
    name: str,
    size: int,
    want: Collection[str] | Select = (),
    limits: Limits = DEFAULT_LIMITS,
    layout: Layout = "tree",
    advice: str = _SDIST_ADVICE,
) -> Listing:
    """:func:`read_archive` of a zip already open (a remote wheel read by byte ranges,
    :mod:`monorepo.lazywheel`); *size* is the archive's size in bytes."""
    source = _Archive(None, None, name, package, limits, layout, advice, size)
    return _emit_zip(zf, source, functools.partial(_Collector, want))


@dataclass
class _Archive:
    """The archive being opened: where it is, what it is called, for whom, the rules."""

    path: Path | None
    data: bytes | None
    name: str
    package: str
    limits: Limits
    layout: Layout
    advice: str
    size: int = 0

    @classmethod
    def of(
        cls,
        archive: Path | bytes,
        name: str | None,
        package: str,
        limits: Limits,
        layout: Layout,
        advice: str,
    ) -> _Archive:
        if isinstance(archive, bytes):
            if name is None:
                raise TypeError("the name of an archive given as bytes is required")
            return cls(None, archive, name, package, limits, layout, advice, len(archive))
        source = cls(archive, None, name or archive.name, package, limits, layout, advice)
        source.kind()  # an unsupported name is refused before the file is touched
        try:
            source.size = archive.stat().st_size
        except OSError as e:
            raise ExtractError(
                f"{package}: cannot read {source.name} ({e.strerror}); run 'monorepo pull'"
                " again to fetch it"
            ) from e
        return source

    def planner(self) -> Planner:
        return Planner(self.package, self.name, self.size, self.limits, self.layout, self.advice)

    def kind(self) -> Literal["tar", "zip"]:
        name = self.name.lower()
        if name.endswith(_ZIP_SUFFIXES):
            return "zip"
        if name.endswith(_TAR_SUFFIXES):
            return "tar"
        raise ExtractError(
            f"{self.package}: refusing {self.name}: not a supported archive; expected"
            " .tar.gz, .tar.bz2, .tar.xz, .tar, .zip or .whl"
        )

    def read_bytes(self) -> bytes | None:
        """All of the (compressed) archive, or None if the file cannot be read."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def open(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")

    def emit(self, sink: Callable[[Planner], _Sink[_T]]) -> _T:
        """Plan every member, then hand the plan to the sink *sink(planner)* makes."""
        if self.kind() == "zip":
            try:
                zf = zipfile.ZipFile(self.open())
            except (*_READ_ERRORS, OSError) as e:
                raise _unreadable(self, e) from e
            with zf:
                return _emit_zip(zf, self, sink)
        return _emit_tar(self, sink)


def _cannot_write(archive: _Archive, dest: Path, error: OSError) -> MonorepoError:
    full = disk_full(error, dest.parent, what=f"{archive.package}: cannot extract {archive.name}")
    if full is not None:
        return full
    return ExtractError(
        f"{archive.package}: cannot extract {archive.name} into {dest}: {error}; check the"
        f" free space and permissions of {dest.parent}"
    )


def _unreadable(archive: _Archive, error: BaseException) -> ExtractError:
    return ExtractError(
        f"{archive.package}: refusing {archive.name}: it is not a readable archive ({error});"
        " delete it from the cache (or the project) and run the command again"
    )


_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class _Sink(Protocol[_T_co]):
    """Where a checked plan goes, member by member: :class:`_Writer` (to disk) or
    :class:`_Collector` (the few members a caller asked for)."""

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


class _Collector:
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
        except (*_READ_ERRORS, OSError) as e:
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
        except (*_READ_ERRORS, OSError) as e:
            raise self.planner.refuse(planned.original, f"could not be read: {e}") from e
        if not same:
            raise self.planner.refuse(
                planned.original, "is a duplicate of an earlier member with different content"
            )

    def finish(self) -> Listing:
        self._wanted()  # a selection sees the plan even when no member was read
        return Listing(self.planner.top, tuple(self.planner.members), self.contents)


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


def tar_raw(info: tarfile.TarInfo) -> RawMember:
    """A tar member as :class:`Planner` sees it (every tar the tool opens is read so)."""
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


def _gunzip(data: bytes | None, limit: int) -> bytes | None:
    """The decompressed tar stream of gzip *data*, or None when it is not gzip, is
    damaged or exceeds *limit* (then the archive is read the ordinary way, which refuses
    or reports it exactly as it always did)."""
    if data is None or not data.startswith(_GZIP_MAGIC):
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


def _stream_limit(archive_size: int, limits: Limits) -> int:
    """The most bytes a decompressed tar stream may have under *limits*: what its
    members may hold, plus room for tar headers and padding."""
    return min(limits.max_total_size, int(archive_size * limits.max_ratio)) + _TAR_OVERHEAD


def _emit_tar(archive: _Archive, sink: Callable[[Planner], _Sink[_T]]) -> _T:
    # A stream past what the limits allow goes the slow way, which refuses it at its
    # first oversized header; the allowance covers tar headers and padding.
    allowed = min(_IN_MEMORY_LIMIT, _stream_limit(archive.size, archive.limits))
    stream = _gunzip(archive.read_bytes(), allowed)
    if stream is not None:
        # The usual sdist's headers are read by tarscan, a fifth of tarfile's CPU; any
        # other archive (and every hostile one tarscan does not know) by tarfile.
        members = tarscan.scan(stream)
        if members is not None:
            return _plan_tar(members, None, stream, archive, sink)
        try:
            tf = tarfile.open(fileobj=io.BytesIO(stream), mode="r:")  # noqa: SIM115
        except (*_READ_ERRORS, OSError):
            pass
        else:
            with tf:
                try:
                    return _plan_tar(tf, tf, stream, archive, sink)
                except _ReadAgain:
                    pass
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(archive.open())
            tf = stack.enter_context(tarfile.open(fileobj=handle, mode="r:*"))
        except (*_READ_ERRORS, OSError) as e:
            raise _unreadable(archive, e) from e
        return _plan_tar(tf, tf, None, archive, sink)


def _plan_tar(
    members: Iterable[tarfile.TarInfo],
    tf: tarfile.TarFile | None,
    stream: bytes | None,
    archive: _Archive,
    sink: Callable[[Planner], _Sink[_T]],
) -> _T:
    """Plan every member, then give the plan to the sink.

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
            planner.add(tar_raw(info))
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

    out = sink(planner)
    files: dict[str, tarfile.TarInfo] = {}
    for planned, info in zip(plan, infos, strict=True):
        if not planned.rel:
            continue
        if planned.kind == "file":
            files[planned.rel] = info
            out.file(planned, read(info), planned.executable, info.mtime)
        elif planned.kind == "dir":
            out.directory(planned, info.mtime)
        elif planned.kind == "hardlink":
            # A copy of the target's data, mode and time, under the new name.
            source = files[planned.link]
            out.file(planned, read(source), source.mode & 0o111 != 0, source.mtime)
        elif planned.kind == "symlink":
            out.symlink(planned)
        else:
            out.duplicate(planned, functools.partial(read_all, info))
    return out.finish()


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


def _emit_zip(zf: zipfile.ZipFile, archive: _Archive, sink: Callable[[Planner], _Sink[_T]]) -> _T:
    planner = archive.planner()
    try:
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
    except (*_READ_ERRORS, OSError) as e:
        raise _unreadable(archive, e) from e
    out = sink(planner)
    counter = _ZipCounter(planner, archive.size)
    for planned, info in zip(plan, infos, strict=True):
        if planned.kind == "duplicate":
            out.duplicate(planned, functools.partial(zf.read, info))
        elif planned.kind == "dir" and planned.rel:
            out.directory(planned, None)
        elif planned.kind == "symlink":
            out.symlink(planned)
        elif planned.kind == "file" and planned.rel:
            out.file(planned, counter.chunks(zf, info, planned), planned.executable, None)
    return out.finish()


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


def decompress(name: str, blob: bytes, *, package: str, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The tar stream inside *blob*, compressed as the suffix of *name* says (``.gz``,
    ``.xz``, ``.lzma``, ``.bz2``, ``.zst``; none: as it is), for :func:`tar_raw`.

    For archives inside archives (a ``.deb``'s ``data.tar.*``): decompression stops one
    byte past what a tar under *limits* can hold (:func:`_stream_limit`), so a bomb is
    refused without being held in memory.  Raises :class:`ExtractError`.
    """
    limit = _stream_limit(len(blob), limits)
    try:
        if name.endswith((".xz", ".lzma")):
            out = lzma.LZMADecompressor().decompress(blob, limit + 1)
        elif name.endswith(".gz"):
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = inflater.decompress(blob, limit + 1)
            if len(out) <= limit and not inflater.eof:
                raise EOFError("the gzip stream is truncated")
        elif name.endswith(".bz2"):
            out = bz2.BZ2Decompressor().decompress(blob, limit + 1)
        elif name.endswith(".zst"):
            out = _unzstd(blob, limit + 1, name, package)
        elif name.endswith(".tar") or "." not in name:
            out = blob
        else:
            raise ExtractError(f"{package}: unsupported compression of {name}")
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as e:
        raise ExtractError(f"{package}: {name} cannot be decompressed ({e})") from e
    if len(out) > limit:
        raise ExtractError(
            f"{package}: refusing {name}: it decompresses to more than {limit} bytes, over"
            f" what {limits.max_total_size} bytes of members (or {limits.max_ratio:g} times"
            f" its {len(blob)} bytes) need (a decompression bomb?)"
        )
    return out


def _unzstd(blob: bytes, limit: int, name: str, package: str) -> bytes:
    try:
        zstandard: Any = importlib.import_module("zstandard")
    except ImportError as e:
        raise ExtractError(
            f"{package}: {name} is compressed with zstd, which needs the 'zstandard' module:"
            " pip install zstandard"
        ) from e
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as reader:
        out: bytes = reader.read(limit)
    return out


# ------------------------------------------------------------------ worker processes

_Request = tuple[str, str, str, Limits, "str | None"]


class _Worker:
    """One worker interpreter serving extractions over its stdin and stdout."""

    def __init__(self, inherit_fds: tuple[int, ...] = ()) -> None:
        self.process = workerproc.spawn(__name__, "_serve", inherit_fds=inherit_fds)
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
    *inherit_fds*: descriptors every worker holds until it exits (pull's lock).
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        min_size: int = 256 * 1024,
        inherit_fds: tuple[int, ...] = (),
    ) -> None:
        self.processes = processes if processes is not None else (os.cpu_count() or 1)
        self.min_size = min_size
        self.inherit_fds = inherit_fds
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
            workerproc.prestart(
                __name__,
                "_serve",
                self.processes - len(self._workers),
                inherit_fds=self.inherit_fds,
            )

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
                    remove_tree(dest, ignore_errors=True)
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
                        worker = _Worker(self.inherit_fds)
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
        workerproc.stop_spares(__name__, "_serve", inherit_fds=self.inherit_fds)
        self._idle.put(None)
